package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"ledge/agent/manifest"
	"ledge/internal/fault"
)

// Sources of deployments.
const (
	SourceAPI  = "api"  // ledge deploy apply, the dashboard
	SourceHTTP = "http" // the polled URL
	SourceMQTT = "mqtt" // the upstream deployment topic
	// SourceParent ("parent", parent.go): the parent's twins.
)

// errIgnored marks a remote manifest that is not newer than what ledge
// has: not an error, nothing to report.
var errIgnored = errors.New("not newer")

// candidate is a manifest that passed every check and may become current.
type candidate struct {
	data   []byte
	sig    []byte
	man    *manifest.Manifest
	digest string
	signer string
	// elevated are the elevated settings its modules ask for (allowed,
	// or it would not be a candidate).
	elevated []Elevation
	// upstream says what $upstream was resolved to, by module: the image
	// as written.
	upstream map[string]string
	parent   parentRegistry
}

// Digest is the hex SHA-256 of a manifest's bytes, as deployments are
// identified.
func Digest(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// parentRegistry is what $upstream stands for, and which setting says so.
type parentRegistry struct {
	host, from string
}

func (a *Agent) parentRegistry() parentRegistry {
	return resolveParent(a.cfg, a.opts.ParentHost)
}

func resolveParent(cfg Config, parentHost string) parentRegistry {
	switch {
	case cfg.UpstreamRegistry != "":
		return parentRegistry{cfg.UpstreamRegistry, "agent.upstreamRegistry"}
	case parentHost != "":
		return parentRegistry{parentHost, "the host of hub.upstream"}
	}
	return parentRegistry{}
}

// parse reads a manifest and resolves $upstream in it. Without a parent,
// a manifest that needs one is refused; when check is set, it is
// accepted with a warning instead (deploy check says what apply will do).
func (a *Agent) parse(data []byte, check bool) (*manifest.Manifest, map[string]string, error) {
	return parseResolved(data, a.parentRegistry(), check)
}

func parseResolved(data []byte, parent parentRegistry, check bool) (*manifest.Manifest, map[string]string, error) {
	man, err := manifest.Parse(data)
	if err != nil {
		return nil, nil, &fault.Error{Kind: fault.Invalid, Msg: "manifest: " + err.Error(), Err: err}
	}
	refs := man.UpstreamRefs()
	if len(refs) == 0 {
		return man, nil, nil
	}
	if parent.host == "" {
		msg := fmt.Sprintf("%s: $upstream is the parent's registry in nested edge, but this ledge has no parent: set hub.upstream (its parent) or agent.upstreamRegistry", strings.Join(refs, ", "))
		if !check {
			return nil, nil, fault.New(fault.Invalid, "manifest: %s", msg)
		}
		man.Warnings = append(man.Warnings, msg+"; apply refuses it until then")
		return man, nil, nil
	}
	return man, man.ResolveUpstream(parent.host), nil
}

// verify reads and checks a manifest without changing anything: format,
// fields, signature, and every section by its owner. check is set for
// `deploy check`: what only apply refuses is a warning.
func (a *Agent) verify(ctx context.Context, data []byte, sig *Signature, check bool) (*candidate, error) {
	if sig == nil {
		var err error
		if data, sig, err = Unwrap(data); err != nil {
			return nil, err
		}
	}
	c := &candidate{data: data, digest: Digest(data), parent: a.parentRegistry()}
	man, upstream, err := a.parse(data, check)
	if err != nil {
		return nil, err
	}
	c.man, c.upstream = man, upstream
	if c.signer, err = Verify(a.trusted, data, sig); err != nil {
		return nil, err
	}
	if sig != nil {
		c.sig, _ = json.Marshal(sig)
	}
	if c.elevated, err = a.policy.checkManifest(man); err != nil {
		return c, err
	}
	if err := a.validateSections(ctx, man); err != nil {
		return nil, err
	}
	return c, nil
}

// validateSections asks each section's owner about it; a section nobody
// owns, or twins without a hub, are refused.
func (a *Agent) validateSections(ctx context.Context, man *manifest.Manifest) error {
	var errs []error
	for _, name := range manifest.SectionNames {
		raw, ok := man.Sections[name]
		if !ok {
			continue
		}
		h := a.opts.Sections[name]
		if h == nil {
			errs = append(errs, fmt.Errorf("%s: this ledge has no component that takes %s (is it enabled in ledge.yaml?)", name, name))
			continue
		}
		if err := h.Validate(ctx, raw); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	if len(man.Twins) > 0 && a.opts.Twins == nil {
		errs = append(errs, fmt.Errorf("twins: this ledge has no hub to hold module twins (%d given)", len(man.Twins)))
	}
	if len(errs) > 0 {
		err := errors.Join(errs...)
		return &fault.Error{Kind: fault.Invalid, Msg: "manifest: " + err.Error(), Err: err}
	}
	return nil
}

// ApplyResult is what Apply accepted.
type ApplyResult struct {
	Deployment Deployment `json:"deployment"`
	Plan       *Plan      `json:"plan"`
}

// Apply makes a manifest the current deployment (from the CLI or API):
// it is verified first, and a manifest that fails any check changes
// nothing. Once Apply returns, the deployment is persisted (it survives
// a crash) and being reconciled; follow it with Reported or Events. sig
// is a detached signature file, or nil (the manifest may also be an
// envelope that carries one).
func (a *Agent) Apply(ctx context.Context, data, sig []byte) (*ApplyResult, error) {
	var s *Signature
	if len(bytes.TrimSpace(sig)) > 0 {
		var err error
		if s, err = ParseSignature(sig); err != nil {
			return nil, err
		}
	}
	a.deployMu.Lock()
	defer a.deployMu.Unlock()
	c, err := a.verify(ctx, data, s, false)
	if err != nil {
		return nil, err
	}
	plan, err := a.plan(ctx, c)
	if err != nil {
		return nil, err
	}
	d, err := a.commit(ctx, c, SourceAPI)
	if err != nil {
		return nil, err
	}
	a.activate(ctx, d, c.man, false)
	return &ApplyResult{Deployment: *d, Plan: plan}, nil
}

// offerRemote takes a manifest from a remote source: applied when it is
// newer than everything ledge has seen, ignored when not, refused (and
// reported) when it fails a check.
func (a *Agent) offerRemote(ctx context.Context, source string, data []byte, sig *Signature) error {
	a.deployMu.Lock()
	defer a.deployMu.Unlock()
	c, err := a.verify(ctx, data, sig, false)
	if err != nil {
		a.reject(c, data, source, err)
		return err
	}
	if err := a.newer(ctx, c); err != nil {
		if !errors.Is(err, errIgnored) {
			a.reject(c, data, source, err)
		}
		return err
	}
	d, err := a.commit(ctx, c, source)
	if err != nil {
		return err
	}
	a.log.Info("deployment received", "source", source, "version", d.Version, "id", d.ID)
	a.activate(ctx, d, c.man, false)
	return nil
}

// commit persists a verified manifest as the current deployment.
func (a *Agent) commit(ctx context.Context, c *candidate, source string) (*Deployment, error) {
	d := &Deployment{Version: c.man.Version, Digest: c.digest, Source: source, Format: string(c.man.Format),
		Manifest: c.data, Signature: c.sig, Signer: c.signer, ReceivedAt: time.Now().UTC()}
	if err := a.store.insertCurrent(ctx, d); err != nil {
		return nil, err
	}
	if source != SourceAPI {
		if prev, _ := a.store.state(ctx, "remote_version"); manifest.CompareVersions(d.Version, prev) > 0 {
			a.store.setState(ctx, "remote_version", d.Version)
		}
		a.store.setState(ctx, "remote_digest", d.Digest)
	}
	if err := a.store.prune(ctx, a.cfg.History); err != nil {
		a.log.Warn("prune deployment history", "err", err)
	}
	a.mu.Lock()
	a.rolledBackFrom = nil
	a.mu.Unlock()
	a.count.applied.Add(1)
	a.bus.publish(Event{Kind: EventDeployment, Deployment: d.ID, Version: d.Version, State: StateApplying})
	return d, nil
}

// reject records a refused manifest for the reported state.
func (a *Agent) reject(c *candidate, data []byte, source string, err error) {
	r := &Rejection{Digest: Digest(data), Source: source, Reason: err.Error(), At: azureTime(time.Now())}
	if c != nil && c.man != nil {
		r.Version = c.man.Version
	}
	a.count.rejected.Add(1)
	a.mu.Lock()
	same := a.rejected != nil && a.rejected.Digest == r.Digest && a.rejected.Reason == r.Reason
	a.rejected = r
	a.reportedRev++
	a.mu.Unlock()
	if !same {
		a.log.Warn("manifest rejected; the running deployment stays", "source", source, "reason", err)
		a.bus.publish(Event{Kind: EventRejected, Version: r.Version, Reason: r.Reason})
	}
}

// activate makes d current in memory and hands it on: sections in their
// order, twins, then the containers. Called with deployMu held.
func (a *Agent) activate(ctx context.Context, d *Deployment, man *manifest.Manifest, boot bool) {
	a.mu.Lock()
	a.activating = man
	a.mu.Unlock()
	errs := map[string]string{}
	for _, name := range manifest.SectionNames {
		h := a.opts.Sections[name]
		if h == nil {
			continue
		}
		raw := man.Sections[name]
		a.mu.Lock()
		prev, had := a.applied[name]
		a.mu.Unlock()
		if !boot && had && bytes.Equal(prev, raw) {
			continue
		}
		if err := h.Apply(ctx, raw); err != nil {
			errs[name] = err.Error()
			a.log.Error("apply section", "section", name, "deployment", d.ID, "err", err)
			continue
		}
		a.mu.Lock()
		a.applied[name] = raw
		a.mu.Unlock()
	}
	if tw := a.opts.Twins; tw != nil {
		for _, id := range slices.Sorted(maps.Keys(man.Twins)) {
			raw := man.Twins[id]
			a.mu.Lock()
			prev := a.appliedTwins[id]
			a.mu.Unlock()
			if !boot && bytes.Equal(prev, raw) {
				continue
			}
			if err := tw.SetDesired(ctx, id, raw); err != nil {
				errs["twins"] = fmt.Sprintf("twin %s: %v", id, err)
				continue
			}
			a.mu.Lock()
			a.appliedTwins[id] = raw
			a.mu.Unlock()
		}
	}
	a.mu.Lock()
	a.current, a.currentMan, a.sectionErrs = d, man, errs
	a.activating = nil
	a.reportedRev++
	a.mu.Unlock()
	a.rec.setDesired(&desired{dep: d, man: man})
}

// sectionsReady is asked by the reconciler whether the sections of the
// current deployment are done.
func (a *Agent) sectionsReady() (bool, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, name := range manifest.SectionNames {
		if e := a.sectionErrs[name]; e != "" {
			return false, fmt.Sprintf("section %s: %s", name, e)
		}
	}
	if e := a.sectionErrs["twins"]; e != "" {
		return false, e
	}
	for name, h := range a.opts.Sections {
		r, ok := h.(SectionReporter)
		if !ok || a.applied[name] == nil {
			continue
		}
		switch rep := r.Report(); rep.State {
		case SectionFailed:
			return false, fmt.Sprintf("section %s: %s", name, rep.Detail)
		case SectionPending:
			return false, ""
		}
	}
	return true, ""
}

// sectionsProgress sums the progress counters of the current deployment's
// pending sections.
func (a *Agent) sectionsProgress() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	var sum int64
	for name, h := range a.opts.Sections {
		if r, ok := h.(SectionReporter); ok && a.applied[name] != nil {
			sum += r.Report().Progress
		}
	}
	return sum
}

// handleOutcome records that the current deployment converged or failed,
// and rolls a failed one back to the last good deployment.
func (a *Agent) handleOutcome(ctx context.Context, o outcome) {
	a.deployMu.Lock()
	defer a.deployMu.Unlock()
	a.mu.Lock()
	cur := a.current
	a.mu.Unlock()
	if cur == nil || cur.ID != o.id {
		return // about a deployment that is no longer current
	}
	now := time.Now().UTC()
	if o.state == StateConverged {
		if err := a.store.setOutcome(ctx, cur.ID, StateConverged, "", now); err != nil {
			a.log.Error("record convergence", "err", err)
		}
		a.mu.Lock()
		c := *cur
		c.State, c.Reason, c.ConvergedAt, c.Good = StateConverged, "", now, true
		a.current = &c
		a.reportedRev++
		a.mu.Unlock()
		a.log.Info("deployment converged", "id", cur.ID, "version", cur.Version)
		a.bus.publish(Event{Kind: EventDeployment, Deployment: cur.ID, Version: cur.Version, State: StateConverged})
		return
	}
	a.log.Warn("deployment did not converge", "id", cur.ID, "version", cur.Version, "reason", o.reason)
	a.mu.Lock()
	wasRollback := a.rolledBackFrom != nil
	a.mu.Unlock()
	// A deployment that converged before is not rolled back (at boot, a
	// missing camera must not bring back last month's deployment); nor is
	// the target of a rollback.
	if a.cfg.Rollback.Auto && !wasRollback && !cur.Good {
		target, err := a.store.lastGoodBefore(ctx, cur.ID)
		if err != nil {
			a.log.Error("find the last good deployment", "err", err)
		}
		if target != nil {
			if err := a.rollbackTo(ctx, target, cur, o.reason); err == nil {
				return
			}
		}
	}
	if err := a.store.setOutcome(ctx, cur.ID, StateFailed, o.reason, now); err != nil {
		a.log.Error("record failure", "err", err)
	}
	a.mu.Lock()
	c := *cur
	c.State, c.Reason = StateFailed, o.reason
	a.current = &c
	a.reportedRev++
	a.mu.Unlock()
	a.bus.publish(Event{Kind: EventDeployment, Deployment: cur.ID, Version: cur.Version, State: StateFailed, Reason: o.reason})
}

// Rollback returns to the last good deployment before the current one.
func (a *Agent) Rollback(ctx context.Context) (*Deployment, error) {
	a.deployMu.Lock()
	defer a.deployMu.Unlock()
	a.mu.Lock()
	cur := a.current
	a.mu.Unlock()
	if cur == nil {
		return nil, fault.New(fault.Conflict, "no deployment to roll back")
	}
	target, err := a.store.lastGoodBefore(ctx, cur.ID)
	if err != nil {
		return nil, err
	}
	if target == nil {
		return nil, fault.New(fault.Conflict, "deployment %s (id %d) has no earlier deployment that converged to roll back to", cur.Version, cur.ID)
	}
	if err := a.rollbackTo(ctx, target, cur, "rolled back by request"); err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	d := *a.current
	return &d, nil
}

// rollbackTo makes target current again. Called with deployMu held.
func (a *Agent) rollbackTo(ctx context.Context, target, from *Deployment, reason string) error {
	man, _, err := a.parse(target.Manifest, false)
	if err != nil {
		return fmt.Errorf("roll back to %d: %w", target.ID, err)
	}
	if err := a.store.makeCurrent(ctx, target.ID, StateRolledBack, reason); err != nil {
		return err
	}
	a.count.rolledBack.Add(1)
	t := *target
	t.State, t.Reason = StateApplying, ""
	a.log.Warn("rolling back", "from", from.Version, "fromId", from.ID, "to", t.Version, "toId", t.ID, "reason", reason)
	a.bus.publish(Event{Kind: EventDeployment, Deployment: from.ID, Version: from.Version, State: StateRolledBack, Reason: reason})
	a.activate(ctx, &t, man, false)
	a.mu.Lock()
	a.rolledBackFrom = &RollbackReport{ID: from.ID, Version: from.Version, Reason: reason, At: azureTime(time.Now())}
	a.mu.Unlock()
	a.bus.publish(Event{Kind: EventDeployment, Deployment: t.ID, Version: t.Version, State: StateApplying, Reason: "rollback"})
	return nil
}

// persistReported saves the reported state when it changed and publishes
// it upstream (again on the next tick when publishing failed).
func (a *Agent) persistReported(ctx context.Context, last *[]byte, force bool) {
	rep := a.Reported()
	data, err := json.Marshal(rep)
	if err != nil {
		a.log.Error("reported state", "err", err)
		return
	}
	// The parent gets only what it does not have (nothing when nothing
	// changed), and again what it failed to get.
	a.reportParent(ctx, rep)
	changed := force || !bytes.Equal(data, *last)
	if !changed && !a.publishFailed {
		return
	}
	if changed {
		*last = data
		if err := a.store.saveReported(ctx, data); err != nil {
			a.log.Error("persist reported state", "err", err)
		}
	}
	a.publishFailed = !a.publishReported(ctx, data)
}
