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

// Activator makes a verified version serve. appliance wires in the
// pipeline engine, which loads the version beside the one serving, warms
// it, and switches between two frames.
type Activator interface {
	// Activate loads v (its file is v.Path) for every user of v.Name, or
	// once on its own when nothing uses the name, and checks that it
	// serves: one inference on a blank frame, its outputs decoded by its
	// adapter. Then it calls commit, which records v as active (Resolve
	// returns it from then on); if commit succeeds, it switches the users
	// to v between two frames and releases what they ran before. If
	// loading, warming or commit fails, nothing changes and the error says
	// why.
	Activate(ctx context.Context, v Version, commit func() error) error
}

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

// activate loads, warms and switches to name@version (see Activator).
// Activations are serialised.
func (s *Store) activate(ctx context.Context, name, version, reason string, pinned bool) (Version, error) {
	s.actMu.Lock()
	defer s.actMu.Unlock()
	s.mu.Lock()
	s.activating[name] = version
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.activating, name)
		s.mu.Unlock()
	}()
	v, err := s.version(ctx, name, version)
	if errors.Is(err, sql.ErrNoRows) {
		return Version{}, fault.New(fault.NotFound, "no version %s of model %q in the store", version, name)
	}
	if err != nil {
		return Version{}, err
	}
	switch {
	case v.State == StateFailed && s.hasBlob(v.Digest) && pinned:
		// Tried again by hand.
	case v.State != StateReady:
		return Version{}, fault.New(fault.Conflict, "%s is %s, not ready: it can be activated once it is downloaded and verified", v.Ref(), v.State)
	case !s.hasBlob(v.Digest):
		return Version{}, fault.New(fault.Conflict, "%s: its file is missing from the store", v.Ref())
	}
	r, err := s.nameRow(ctx, name)
	if err != nil {
		return Version{}, err
	}
	if !pinned && reason == reasonDeployment && (r.pinned || r.desired != version) {
		// Chosen by hand meanwhile, or the deployment changed.
		return Version{}, fault.New(fault.Conflict, "%s is no longer what the deployment asks for", v.Ref())
	}
	if r.active == version && v.State == StateReady {
		if pinned != r.pinned {
			if err := s.setPinned(ctx, name, pinned); err != nil {
				return Version{}, err
			}
			s.refreshLogged(ctx)
		}
		v.State, v.Path = StateActive, s.blobPath(v.Digest)
		return v, nil
	}
	v.Path = s.blobPath(v.Digest)
	s.publishState(name, version, StateActivating, "")
	s.log.Info("activating model", "model", name, "version", version, "previous", orNone(r.active), "reason", reason)

	var committed bool
	var commitErr error
	at := time.Now()
	commit := func() error {
		if err := s.recordActivation(context.WithoutCancel(ctx), name, version, reason, pinned, at); err != nil {
			commitErr = err
			return err
		}
		committed = true
		s.refreshLogged(ctx)
		return nil
	}
	t0 := time.Now()
	if a := s.activator.Load(); a != nil && *a != nil {
		err = (*a).Activate(ctx, v, commit)
	} else {
		err = commit()
	}
	switch {
	case err == nil && !committed:
		err = errors.New("the activator did not commit")
	case err != nil && committed:
		// The activator broke its contract; the record stands, since the
		// users may already run the new version.
		s.log.Error("model activator failed after commit", "model", name, "version", version, "err", err)
		err = nil
	}
	if err != nil {
		s.stats.activateFails.Add(1)
		if commitErr != nil || ctx.Err() != nil {
			return Version{}, fmt.Errorf("activate %s: %w", v.Ref(), err)
		}
		msg := "activation: " + err.Error()
		if serr := s.setState(context.WithoutCancel(ctx), name, version, StateFailed, msg); serr != nil {
			s.log.Error("model store", "err", serr)
		}
		s.refreshLogged(ctx)
		s.publishState(name, version, StateFailed, msg)
		s.log.Warn("model version not activated: the previous one stays", "model", name, "version", version,
			"active", orNone(r.active), "err", err)
		if fault.KindOf(err) == fault.Internal {
			err = fault.Wrap(fault.Invalid, err)
		}
		return Version{}, &fault.Error{Kind: fault.KindOf(err), Msg: fmt.Sprintf("%s cannot serve, %s stays active: %v", v.Ref(), orNone(r.active), err), Err: err}
	}
	s.stats.activations.Add(1)
	s.publishState(name, version, StateActive, "")
	s.log.Info("model active", "model", name, "version", version, "took", time.Since(t0).Round(time.Millisecond))
	if err := s.trimHistory(context.WithoutCancel(ctx), name, historyKeep); err != nil {
		s.log.Warn("model store: trim history", "err", err)
	}
	if err := s.collectLocked(context.WithoutCancel(ctx)); err != nil {
		s.log.Warn("model store: collect", "err", err)
	}
	v.State = StateActive
	v.ActivatedAt = at.UTC()
	return v, nil
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
					jobs = append(jobs, job{n, v.Version, "pulled with activate", true})
				}
				break
			}
		}
	}
	for _, j := range jobs {
		s.activating[j.name] = j.version
	}
	s.mu.Unlock()
	for _, j := range jobs {
		ok := s.background(func(ctx context.Context) {
			if _, err := s.activate(ctx, j.name, j.version, j.reason, j.pinned); err != nil && ctx.Err() == nil {
				s.log.Warn("model activation failed", "model", j.name, "version", j.version, "err", err)
			}
		})
		if !ok {
			s.mu.Lock()
			delete(s.activating, j.name)
			s.mu.Unlock()
		}
	}
}
