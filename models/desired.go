package models

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"ledge/internal/fault"
)

// Check verifies a spec against the store and its configuration without
// changing anything: the URL scheme, the kind, the size limit, the
// signature (when trusted keys are configured), and that name@version, if
// stored, has the same digest (a version's content never changes). It
// returns the id of the key that signed the digest ("" when none was
// checked).
func (s *Store) Check(ctx context.Context, sp Spec) (signer string, err error) {
	var errs []error
	bad := func(field string, k fault.Kind, format string, args ...any) {
		errs = append(errs, fault.New(k, "%s: "+format, append([]any{field}, args...)...))
	}
	if u, err := url.Parse(sp.URL); err == nil && u.Scheme == "http" && !s.cfg.AllowHTTP {
		bad("url", fault.Invalid, "plain http:// is refused: use https://, or set models.allowHTTP in ledge.yaml")
	} else if err == nil && u.Scheme == "file" {
		if err := s.checkFileSource(u.Path, false); err != nil {
			bad("url", fault.Invalid, "%v", err)
		}
	}
	if sp.Kind != "" && sp.Kind != "auto" && s.kinds != nil && !slices.Contains(s.kinds, sp.Kind) {
		bad("kind", fault.Invalid, "unknown model kind %q (want auto, %s)", sp.Kind, strings.Join(s.kinds, ", "))
	}
	if sp.Size > s.cfg.MaxModelBytes {
		bad("size", fault.TooLarge, "%d bytes is over models.maxModelBytes %d", sp.Size, s.cfg.MaxModelBytes)
	}
	signer, err = s.verifySignature(sp)
	if err != nil {
		errs = append(errs, err)
	}
	old, err := s.version(ctx, sp.Name, sp.Version)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return "", err
	case old.Digest != sp.SHA256 && old.State != StateFailed:
		bad("sha256", fault.Conflict, "%s is stored with digest %s already: a version's content never changes, give the new file a new version",
			sp.Ref(), old.Digest)
	}
	if len(errs) == 0 {
		return signer, nil
	}
	err = errors.Join(errs...)
	return "", &fault.Error{Kind: fault.KindOf(errs[0]), Msg: err.Error(), Err: err}
}

// verifySignature checks the spec's signature over its digest against the
// trusted keys. With no trusted keys nothing is checked.
func (s *Store) verifySignature(sp Spec) (string, error) {
	if len(s.keys) == 0 {
		return "", nil
	}
	if sp.Signature == nil {
		if s.cfg.RequireSignature {
			return "", fault.New(fault.Unauthorized, "signature: %s is not signed, and models.requireSignature is set: sign its digest with `ledge models sign`", sp.Ref())
		}
		return "", nil
	}
	raw, err := base64.StdEncoding.DecodeString(sp.Signature.Sig)
	if err != nil || len(raw) != ed25519.SignatureSize {
		return "", fault.New(fault.Unauthorized, "signature: malformed (want the base64 of %d bytes)", ed25519.SignatureSize)
	}
	ids := make([]string, len(s.keys))
	for i, k := range s.keys {
		ids[i] = k.ID
		if sp.Signature.KeyID != "" && k.ID != sp.Signature.KeyID {
			continue
		}
		if ed25519.Verify(k.Key, []byte(sp.SHA256), raw) {
			return k.ID, nil
		}
	}
	if id := sp.Signature.KeyID; id != "" && !slices.Contains(ids, id) {
		return "", fault.New(fault.Unauthorized, "signature: %s is signed by key %s, which is not trusted (trusted: %s)", sp.Ref(), id, strings.Join(ids, ", "))
	}
	return "", fault.New(fault.Unauthorized, "signature: does not match the digest of %s for any trusted key (trusted: %s): the digest was changed after signing, or signed with another key",
		sp.Ref(), strings.Join(ids, ", "))
}

// CheckSection parses a manifest's models section and checks every model
// (see Check), naming each error's model.
func (s *Store) CheckSection(ctx context.Context, raw json.RawMessage) ([]Spec, error) {
	specs, err := ParseSection(raw)
	if err != nil {
		return nil, err
	}
	var errs []error
	kind := fault.Invalid
	for _, sp := range specs {
		if _, err := s.Check(ctx, sp); err != nil {
			if len(errs) == 0 {
				kind = fault.KindOf(err)
			}
			errs = append(errs, fmt.Errorf("%s: %w", sp.Name, err))
		}
	}
	if len(errs) > 0 {
		err := errors.Join(errs...)
		return nil, &fault.Error{Kind: kind, Msg: err.Error(), Err: err}
	}
	return specs, nil
}

// record stores sp as a version (queued, or ready when its file is
// already in the store); a stored version with the same digest is kept as
// it is, except a failed one, which is tried again.
func (s *Store) record(ctx context.Context, sp Spec, signer string) (Version, error) {
	old, err := s.version(ctx, sp.Name, sp.Version)
	if err == nil && old.Digest == sp.SHA256 && old.State != StateFailed {
		return old, nil
	}
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return Version{}, err
	}
	v := Version{Name: sp.Name, Version: sp.Version, Digest: sp.SHA256, Size: sp.Size, Kind: sp.Kind, Labels: sp.Labels,
		InputWidth: sp.InputWidth, InputHeight: sp.InputHeight, URL: sp.URL, Signer: signer, State: StateQueued,
		CreatedAt: time.Now().UTC()}
	if sp.Signature != nil {
		b, _ := json.Marshal(sp.Signature)
		v.signature = string(b)
	}
	if st, err := os.Stat(s.blobPath(v.Digest)); err == nil && st.Mode().IsRegular() {
		v.State, v.ReadyAt, v.Size = StateReady, v.CreatedAt, st.Size()
	}
	if err := s.ensureName(ctx, sp.Name); err != nil {
		return Version{}, err
	}
	if err := s.insertVersion(ctx, &v); err != nil {
		return Version{}, err
	}
	if v.State == StateReady {
		s.consumeImportURL(v.URL)
	}
	s.publishState(v.Name, v.Version, v.State, "")
	return v, nil
}

// SetDesired makes specs what the deployment asks for (the models
// section's Apply): each version is downloaded if needed and activated
// once it is ready and serves. A name whose entry did not change and was
// pinned by hand keeps its active version. Names an earlier deployment
// asked for and this one does not are retired: they have no active
// version any more (pipelines that run them keep them until rebuilt;
// their files stay until collected). It returns before any download.
func (s *Store) SetDesired(ctx context.Context, specs []Spec) error {
	signers := make([]string, len(specs))
	for i, sp := range specs {
		var err error
		if signers[i], err = s.Check(ctx, sp); err != nil {
			return fmt.Errorf("%s: %w", sp.Name, err)
		}
	}
	s.actMu.Lock()
	defer s.actMu.Unlock()
	names, err := s.names(ctx)
	if err != nil {
		return err
	}
	want := map[string]bool{}
	for i, sp := range specs {
		want[sp.Name] = true
		if _, err := s.record(ctx, sp, signers[i]); err != nil {
			return err
		}
		spec, _ := json.Marshal(sp)
		old := names[sp.Name]
		unpin := old == nil || old.desiredSpec != string(spec)
		if err := s.setDesiredRow(ctx, sp.Name, sp.Version, string(spec), unpin); err != nil {
			return err
		}
	}
	for n, r := range names {
		if r.desired == "" || want[n] {
			continue
		}
		if err := s.setDesiredRow(ctx, n, "", "", true); err != nil {
			return err
		}
		if r.active != "" {
			// A version chosen by hand that no deployment replaced (the
			// one it listed failed, say, and was rolled back) stays, as
			// before the deployment took the name: pinned.
			byHand, err := s.activeByHand(ctx, n)
			if err != nil {
				return err
			}
			if byHand {
				if err := s.setPinned(ctx, n, true); err != nil {
					return err
				}
				s.log.Info("model kept: the deployment no longer lists it, and the version serving was chosen by hand", "model", n, "active", r.active)
				continue
			}
			if err := s.recordActivation(ctx, n, "", "removed from the deployment", false, time.Now()); err != nil {
				return err
			}
			s.log.Info("model retired: the deployment no longer lists it", "model", n, "was", r.active)
			s.publishState(n, r.active, StateReady, "")
		}
	}
	if err := s.refresh(ctx); err != nil {
		return err
	}
	s.kick()
	s.activatePending(ctx)
	return nil
}

// Pull records sp and downloads it in the background (`ledge models
// pull`); with activate, the version is activated (and pinned) once it is
// ready. A version already stored is activated at once, and then the
// result says whether it serves.
func (s *Store) Pull(ctx context.Context, sp Spec, activate bool) (Version, error) {
	signer, err := s.Check(ctx, sp)
	if err != nil {
		return Version{}, err
	}
	s.actMu.Lock()
	v, err := s.record(ctx, sp, signer)
	s.actMu.Unlock()
	if err != nil {
		return Version{}, err
	}
	if err := s.refresh(ctx); err != nil {
		return Version{}, err
	}
	if activate {
		if v.State == StateReady {
			return s.activate(ctx, sp.Name, sp.Version, reasonPulled, true)
		}
		if err := s.setActivateWhenReady(ctx, v.Name, v.Version, true); err != nil {
			return Version{}, err
		}
		s.mu.Lock()
		s.activateWhenReady[v.Ref()] = true
		s.mu.Unlock()
	}
	s.kick()
	return v, nil
}

// PlanItem is one line of what a models section would change.
type PlanItem struct {
	Name   string `json:"name"`
	Action string `json:"action"` // create, update, remove, unchanged
	Detail string `json:"detail"`
}

// Plan says what SetDesired(specs) would do, changing nothing.
func (s *Store) Plan(ctx context.Context, specs []Spec) ([]PlanItem, error) {
	names, err := s.names(ctx)
	if err != nil {
		return nil, err
	}
	var out []PlanItem
	want := map[string]bool{}
	for _, sp := range specs {
		want[sp.Name] = true
		r := names[sp.Name]
		spec, _ := json.Marshal(sp)
		v, verr := s.version(ctx, sp.Name, sp.Version)
		stored := verr == nil && v.Digest == sp.SHA256
		item := PlanItem{Name: sp.Name, Action: "update"}
		switch {
		case r == nil || (r.active == "" && r.desired == "" && !stored):
			item.Action = "create"
			item.Detail = fmt.Sprintf("download %s from %s, then activate", sp.Version, hostOf(sp.URL))
		case r.pinned && r.desiredSpec == string(spec):
			item.Action = "unchanged"
			item.Detail = fmt.Sprintf("%s stays active (chosen by hand)", orNone(r.active))
		case r.active == sp.Version && stored:
			item.Action = "unchanged"
			item.Detail = sp.Version + " is active"
		case stored && v.State == StateReady:
			item.Detail = fmt.Sprintf("activate %s, stored already (active now: %s)", sp.Version, orNone(r.active))
		case stored && v.State != StateFailed:
			item.Detail = fmt.Sprintf("%s is %s (active now: %s)", sp.Version, v.State, orNone(r.active))
		default:
			item.Detail = fmt.Sprintf("download %s from %s, then activate (active now: %s)", sp.Version, hostOf(sp.URL), orNone(r.active))
		}
		out = append(out, item)
	}
	for n, r := range names {
		if r.desired != "" && !want[n] {
			out = append(out, PlanItem{Name: n, Action: "remove", Detail: fmt.Sprintf("no longer active (was %s); its files stay until collected", orNone(r.active))})
		}
	}
	slices.SortFunc(out, func(a, b PlanItem) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "?"
	}
	if u.Scheme == "file" {
		return "file " + u.Path
	}
	return u.Host
}

// ItemStatus is one desired model in the section report.
type ItemStatus struct {
	Version string  `json:"version"`
	State   State   `json:"state"`
	Percent float64 `json:"percent,omitempty"`
	Bytes   int64   `json:"bytes,omitempty"`
	Total   int64   `json:"total,omitempty"`
	Error   string  `json:"error,omitempty"`
	// Active is the version serving now, when it is not Version.
	Active string `json:"active,omitempty"`
	// Pinned: the active version was chosen by hand.
	Pinned bool `json:"pinned,omitempty"`
}

// Report is the state of what the deployment asks for.
type Report struct {
	// State is "ready" (every desired version is active, or pinned by
	// hand), "pending" (downloading, verifying or activating) or "failed"
	// (a version failed: Detail says which and why).
	State  string                `json:"state"`
	Detail string                `json:"detail,omitempty"`
	Items  map[string]ItemStatus `json:"items,omitempty"`
}

// Report says where the desired models are. It reads the snapshot and the
// transfers in progress: no I/O.
func (s *Store) Report() Report {
	snap := s.snap.Load()
	rep := Report{State: "ready", Items: map[string]ItemStatus{}}
	var pending, failed []string
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range snap.sortedNames() {
		r := snap.names[n]
		if r.desired == "" {
			continue
		}
		it := ItemStatus{Version: r.desired, Pinned: r.pinned}
		v, ok := snap.version(n, r.desired)
		switch {
		case r.pinned && r.active != "":
			it.State, it.Active = StateActive, r.active
		case !ok:
			it.State = StateQueued
		case v.State == StateReady && r.active == r.desired:
			it.State = StateActive
		case v.State == StateReady && s.activating[n] == r.desired:
			it.State = StateActivating
		default:
			it.State, it.Error = v.State, v.Error
			if t := s.transfers[v.Digest]; t != nil {
				p := t.progress()
				it.Percent, it.Bytes, it.Total = p.Percent, p.Bytes, p.Total
			}
		}
		if it.Active == "" && r.active != r.desired {
			it.Active = r.active
		}
		switch it.State {
		case StateActive:
		case StateFailed:
			failed = append(failed, fmt.Sprintf("%s@%s failed: %s", n, r.desired, it.Error))
		case StateDownloading:
			if it.Percent >= 0 {
				pending = append(pending, fmt.Sprintf("%s@%s downloading %.0f%%", n, r.desired, it.Percent))
			} else {
				pending = append(pending, fmt.Sprintf("%s@%s downloading", n, r.desired))
			}
		default:
			pending = append(pending, fmt.Sprintf("%s@%s %s", n, r.desired, it.State))
		}
		rep.Items[n] = it
	}
	switch {
	case len(failed) > 0:
		rep.State, rep.Detail = "failed", strings.Join(append(failed, pending...), "; ")
	case len(pending) > 0:
		rep.State, rep.Detail = "pending", strings.Join(pending, "; ")
	}
	return rep
}
