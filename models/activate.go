package models

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"ledge/internal/fault"
)

// Activator makes verified versions serve. appliance wires in the
// pipeline engine, which loads a version beside the one serving, warms it,
// and switches between two frames.
type Activator interface {
	// Prepare loads v (its file is v.Path) for every user of v.Name, beside
	// what they run now, or once on its own when nothing uses the name, and
	// checks that it serves: one inference on a blank frame, its outputs
	// decoded by its adapter. Nothing switches yet. If loading or warming
	// fails, nothing changes and the error says why.
	Prepare(ctx context.Context, v Version) (Prepared, error)
}

// Prepared is a version an Activator loaded and warmed, not serving yet.
// The store calls exactly one of its methods, once.
type Prepared interface {
	// Commit switches the users to the version between two frames and
	// releases what they ran before. The store calls it once the version
	// is recorded as active, so that Resolve returns it.
	Commit()
	// Abort releases the version; the users keep what they run.
	Abort()
}

// noActivator prepares nothing: without an activator a verified version
// is active as soon as it is recorded.
type noActivator struct{}

func (noActivator) Commit() {}
func (noActivator) Abort()  {}

// reasonDeployment is the activation reason of what a deployment asks for.
const reasonDeployment = "deployment"

// historyKeep bounds the activation history kept per name.
const historyKeep = 50

// Activate makes name@version the active version by hand, pinning it: a
// deployment that keeps the same entry for name leaves it. It returns once
// the version serves (or failed to load or warm, with the reason; the
// version that served before stays).
func (s *Store) Activate(ctx context.Context, name, version string) (Version, error) {
	if err := checkRef(name, version); err != nil {
		return Version{}, err
	}
	return s.activate(ctx, name, version, "activated by hand", true)
}

// Rollback activates the version of name that was active before the
// current one and is still in the store, pinning it like Activate.
func (s *Store) Rollback(ctx context.Context, name string) (Version, error) {
	if why := ValidName(name); why != "" {
		return Version{}, fault.New(fault.Invalid, "%s", why)
	}
	r, err := s.nameRow(ctx, name)
	if err != nil {
		return Version{}, err
	}
	hist, err := s.activationHistory(ctx, name, historyKeep)
	if err != nil {
		return Version{}, err
	}
	if len(hist) == 0 && r.active == "" {
		return Version{}, fault.New(fault.NotFound, "model %q was never active", name)
	}
	for _, v := range hist {
		if v == "" || v == r.active {
			continue
		}
		cand, err := s.version(ctx, name, v)
		if err != nil || cand.State != StateReady || !s.hasBlob(cand.Digest) {
			continue
		}
		return s.activate(ctx, name, v, "rolled back from "+orNone(r.active), true)
	}
	return Version{}, fault.New(fault.Conflict, "no earlier version of %q is in the store to roll back to (active: %s)", name, orNone(r.active))
}

func orNone(v string) string { return cmp.Or(v, "none") }

func checkRef(name, version string) error {
	if why := ValidName(name); why != "" {
		return fault.New(fault.Invalid, "%s", why)
	}
	if why := ValidVersion(version); why != "" {
		return fault.New(fault.Invalid, "%s", why)
	}
	return nil
}

// activate makes name@version the active version, in one transaction:
// the activator prepares it beside what serves, the store records it, the
// activator commits. A version that cannot serve is marked failed and the
// active one stays. Activations are serialised.
func (s *Store) activate(ctx context.Context, name, version, reason string, pinned bool) (Version, error) {
	s.actMu.Lock()
	defer s.actMu.Unlock()
	s.setActivating(name, version)
	defer s.setActivating(name, "")
	v, r, err := s.candidate(ctx, name, version, reason, pinned)
	if err != nil {
		return Version{}, err
	}
	if r.active == version && v.State == StateReady {
		return s.repin(ctx, v, r, pinned)
	}
	return s.switchTo(ctx, v, r, reason, pinned)
}

// setActivating records (version "": forgets) the activation of name that
// runs, so activatePending does not start another.
func (s *Store) setActivating(name, version string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if version == "" {
		delete(s.activating, name)
	} else {
		s.activating[name] = version
	}
}

// candidate is name@version with its file's path, and name's row, if the
// version may be activated: it is ready (or failed, tried again by hand),
// its file is in the store, and, for the deployment, it is still what the
// deployment asks for.
func (s *Store) candidate(ctx context.Context, name, version, reason string, pinned bool) (Version, *nameRow, error) {
	v, err := s.version(ctx, name, version)
	if errors.Is(err, sql.ErrNoRows) {
		return Version{}, nil, fault.New(fault.NotFound, "no version %s of model %q in the store (ledge models list shows what is)", version, name)
	}
	if err != nil {
		return Version{}, nil, err
	}
	switch {
	case v.State == StateFailed && s.hasBlob(v.Digest) && pinned:
		// Tried again by hand.
	case v.State == StateFailed:
		return Version{}, nil, fault.New(fault.Conflict, "%s failed (%s): pull it again to retry (ledge models pull, or the deployment applied again)", v.Ref(), v.Error)
	case v.State != StateReady:
		return Version{}, nil, fault.New(fault.Conflict, "%s is %s, not ready: it can be activated once it is downloaded and verified", v.Ref(), v.State)
	case !s.hasBlob(v.Digest):
		return Version{}, nil, fault.New(fault.Conflict, "%s: its file is missing from the store", v.Ref())
	}
	r, err := s.nameRow(ctx, name)
	if err != nil {
		return Version{}, nil, err
	}
	if !pinned && reason == reasonDeployment && (r.pinned || r.desired != version) {
		// Chosen by hand meanwhile, or the deployment changed.
		return Version{}, nil, fault.New(fault.Conflict, "%s is no longer what the deployment asks for", v.Ref())
	}
	v.Path = s.blobPath(v.Digest)
	return v, r, nil
}

// repin is the activation of the version already active: only its pin
// changes.
func (s *Store) repin(ctx context.Context, v Version, r *nameRow, pinned bool) (Version, error) {
	if pinned != r.pinned {
		if err := s.setPinned(ctx, v.Name, pinned); err != nil {
			return Version{}, err
		}
		s.refreshLogged(ctx)
	}
	v.State = StateActive
	return v, nil
}

// switchTo is the activation's transaction (see activate).
func (s *Store) switchTo(ctx context.Context, v Version, r *nameRow, reason string, pinned bool) (Version, error) {
	s.publishState(v.Name, v.Version, StateActivating, "")
	s.log.Info("activating model", "model", v.Name, "version", v.Version, "previous", orNone(r.active), "reason", reason)
	t0 := time.Now()
	p, err := s.prepare(ctx, v)
	if err != nil {
		return Version{}, s.notActivated(ctx, v, r, err)
	}
	at := time.Now()
	if err := s.recordActivation(context.WithoutCancel(ctx), v.Name, v.Version, reason, pinned, at); err != nil {
		p.Abort()
		s.stats.activateFails.Add(1)
		return Version{}, fmt.Errorf("activate %s: %w", v.Ref(), err)
	}
	s.refreshLogged(ctx)
	p.Commit()
	s.activated(ctx, v, time.Since(t0))
	v.State, v.ActivatedAt = StateActive, at.UTC()
	return v, nil
}

// prepare has the activator prepare v.
func (s *Store) prepare(ctx context.Context, v Version) (Prepared, error) {
	a := s.activator.Load()
	if a == nil || *a == nil {
		return noActivator{}, nil
	}
	return (*a).Prepare(ctx, v)
}

// notActivated handles a version the activator could not prepare: it is
// marked failed with the reason, unless the activation was given up (ledge
// stops) or the activator cannot work now, which says nothing of the
// version.
func (s *Store) notActivated(ctx context.Context, v Version, r *nameRow, err error) error {
	s.stats.activateFails.Add(1)
	if ctx.Err() != nil || fault.KindOf(err) == fault.Unavailable {
		return fmt.Errorf("activate %s: %w", v.Ref(), err)
	}
	msg := "activation: " + err.Error()
	if serr := s.setState(context.WithoutCancel(ctx), v.Name, v.Version, StateFailed, msg); serr != nil {
		s.log.Error("model store", "err", serr)
	}
	s.refreshLogged(ctx)
	s.publishState(v.Name, v.Version, StateFailed, msg)
	s.log.Warn("model version not activated: the previous one stays", "model", v.Name, "version", v.Version,
		"active", orNone(r.active), "err", err)
	if fault.KindOf(err) == fault.Internal {
		err = fault.Wrap(fault.Invalid, err)
	}
	return loggedError{&fault.Error{Kind: fault.KindOf(err), Msg: fmt.Sprintf("%s cannot serve, %s stays active: %v", v.Ref(), orNone(r.active), err), Err: err}}
}

// loggedError is an error already logged where it arose: the background
// job that met it does not log it again.
type loggedError struct{ error }

func (e loggedError) Unwrap() error { return e.error }

// activated tells the world v serves and tidies the store behind it.
func (s *Store) activated(ctx context.Context, v Version, took time.Duration) {
	s.stats.activations.Add(1)
	s.publishState(v.Name, v.Version, StateActive, "")
	s.log.Info("model active", "model", v.Name, "version", v.Version, "took", took.Round(time.Millisecond))
	if err := s.trimHistory(context.WithoutCancel(ctx), v.Name, historyKeep); err != nil {
		s.log.Warn("model store: trim history", "err", err)
	}
	if err := s.collectLocked(context.WithoutCancel(ctx)); err != nil {
		s.log.Warn("model store: collect", "err", err)
	}
}

func (s *Store) setPinned(ctx context.Context, name string, pinned bool) error {
	_, err := s.db.ExecContext(ctx, `UPDATE models_names SET pinned = ? WHERE name = ?`, pinned, name)
	return err
}

// activatePending starts, in the background, the activations the
// deployment (and pulls with activate) wait for: a desired version that is
// ready but not active, unless the name is pinned by hand.
func (s *Store) activatePending(ctx context.Context) {
	snap := s.snap.Load()
	type job struct {
		name, version, reason string
		pinned                bool
	}
	var jobs []job
	var done []Version // pulled with activate, and nothing left to do
	s.mu.Lock()
	for _, n := range snap.sortedNames() {
		r := snap.names[n]
		if s.activating[n] != "" {
			continue
		}
		if r.desired != "" && !r.pinned && r.desired != r.active {
			if v, ok := snap.version(n, r.desired); ok && v.State == StateReady {
				jobs = append(jobs, job{n, r.desired, reasonDeployment, false})
				continue
			}
		}
		for _, v := range snap.versions[n] {
			if s.activateWhenReady[v.Ref()] && v.State != StateQueued && v.State != StateDownloading && v.State != StateVerifying {
				delete(s.activateWhenReady, v.Ref())
				if v.State == StateReady && v.Version != r.active {
					jobs = append(jobs, job{n, v.Version, reasonPulled, true})
				} else {
					done = append(done, v)
				}
				break
			}
		}
	}
	for _, j := range jobs {
		s.activating[j.name] = j.version
	}
	s.mu.Unlock()
	for _, v := range done {
		s.clearActivateWhenReady(ctx, v.Name, v.Version)
	}
	for _, j := range jobs {
		ok := s.background(func(ctx context.Context) {
			_, err := s.activate(ctx, j.name, j.version, j.reason, j.pinned)
			if err != nil && ctx.Err() == nil && !errors.As(err, new(loggedError)) {
				s.log.Warn("model activation failed", "model", j.name, "version", j.version, "err", err)
			}
			if ctx.Err() == nil && j.reason == reasonPulled { // done with, unless ledge stops: then after the restart
				s.clearActivateWhenReady(ctx, j.name, j.version)
			}
		})
		if !ok {
			s.mu.Lock()
			delete(s.activating, j.name)
			s.mu.Unlock()
		}
	}
}

// reasonPulled is the reason of an activation asked for by a pull.
const reasonPulled = "pulled with activate"

// setActivateWhenReady records (or clears) that name@version, pulled with
// "activate", is to be activated once ready: a pull acknowledged before a
// restart is still honoured after it.
func (s *Store) setActivateWhenReady(ctx context.Context, name, version string, on bool) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE models_versions SET activate_when_ready = ? WHERE name = ? AND version = ?`, on, name, version); err != nil {
		return fmt.Errorf("model store: %w", err)
	}
	return nil
}

func (s *Store) clearActivateWhenReady(ctx context.Context, name, version string) {
	if err := s.setActivateWhenReady(context.WithoutCancel(ctx), name, version, false); err != nil {
		s.log.Warn("model store", "err", err)
	}
}

// loadActivateWhenReady reads the pulls still to be activated.
func (s *Store) loadActivateWhenReady(ctx context.Context) error {
	rows, err := s.db.QueryContext(ctx, `SELECT name, version FROM models_versions WHERE activate_when_ready != 0`)
	if err != nil {
		return fmt.Errorf("model store: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name, version string
		if err := rows.Scan(&name, &version); err != nil {
			return fmt.Errorf("model store: %w", err)
		}
		v := Version{Name: name, Version: version}
		s.activateWhenReady[v.Ref()] = true
	}
	return rows.Err()
}
