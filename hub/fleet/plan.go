package fleet

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Outcomes of a device on the deployment it was given.
const (
	OutcomePending   = "pending"
	OutcomeConverged = "converged"
	OutcomeFailed    = "failed"
)

// ManifestDigest names a definition's manifest (sha256 of its text): a
// new manifest under the same name is a new rollout.
func (d *Definition) ManifestDigest() string {
	sum := sha256.Sum256([]byte(d.Manifest))
	return hex.EncodeToString(sum[:])
}

// withdrawn reports whether a definition no longer holds devices: rolled
// back by the operator, or its rollout aborted.
func withdrawn(d *Definition, r *Rollout) bool {
	if d.State == StateRolledBack {
		return true
	}
	return r != nil && r.Phase == PhaseAborted && r.Generation == d.Generation
}

// Desired is the deployment a device should have, as Azure IoT Hub picks
// it: of the definitions still in force whose target matches the
// device's document, the highest priority; a tie goes to the newest, then
// to the name.
func Desired(s *Snapshot, d *Device) *Definition {
	if d.Doc == nil {
		return nil
	}
	var best *Definition
	for _, def := range s.Definitions {
		if withdrawn(def, s.Rollouts[def.Name]) || !def.Matches(d.Doc) {
			continue
		}
		if best == nil || better(def, best) {
			best = def
		}
	}
	return best
}

func better(a, b *Definition) bool {
	if a.Priority != b.Priority {
		return a.Priority > b.Priority
	}
	if !a.Created.Equal(b.Created) {
		return a.Created.After(b.Created)
	}
	return a.Name > b.Name
}

// holds reports whether device d's assignment is definition def's current
// manifest.
func holds(d *Device, def *Definition) bool {
	a := d.Assignment
	return a != nil && a.Deployment == def.Name && a.ManifestDigest == def.ManifestDigest()
}

// Outcome is how device d fares on its assignment, with the device's
// reason when it failed.
func Outcome(d *Device) (string, string) {
	a := d.Assignment
	if a == nil || d.State == nil {
		return OutcomePending, ""
	}
	r := d.State.Properties.Reported
	if rj := r.Rejected; rj != nil && rj.Digest == a.Digest {
		return OutcomeFailed, "refused: " + rj.Reason
	}
	if rb := r.RolledBackFrom; rb != nil && rb.Version == a.Version {
		return OutcomeFailed, "rolled back by the device: " + rb.Reason
	}
	if dep := r.Deployment; dep != nil && dep.Digest == a.Digest {
		switch dep.State {
		case "converged":
			return OutcomeConverged, ""
		case "failed":
			return OutcomeFailed, dep.Reason
		}
	}
	return OutcomePending, ""
}

// rank orders devices within a deployment's waves: a stable pseudo-random
// order (FNV of deployment and device), so every controller computes the
// same waves and a wave is a sample of the fleet, not its first names.
func rank(deployment, device string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(deployment))
	h.Write([]byte{0})
	h.Write([]byte(device))
	return h.Sum64()
}

// Give is one assignment the controller makes: device gets def's
// manifest, in wave Wave.
type Give struct {
	Device     string
	Def        *Definition
	Wave       int
	Previous   string
	RollbackOf string
	// DeletedFrom is the deleted deployment the device leaves.
	DeletedFrom string
}

// Plan is what the controller does in one pass: the assignments to make,
// the rollouts to record, and the devices to withdraw a deleted
// deployment from.
type Plan struct {
	Gives    []Give
	Rollouts map[string]*Rollout // changed ones, by name
	// Withdraw are offline devices given a deployment since deleted
	// that they have not taken, and that no other deployment targets:
	// their retained manifest and assignment record are cleared, so
	// that they keep what they run when they come back.
	Withdraw []Withdrawal
}

// Withdrawal is a deleted deployment withdrawn from a device that had
// not taken it.
type Withdrawal struct {
	Device     string
	Deployment string
}

// MakePlan decides, from the broker's state alone, what to give out now.
// It is a pure function of s and now: two controllers on the same state
// decide the same.
func MakePlan(s *Snapshot, now time.Time, controller string) *Plan {
	p := &Plan{Rollouts: map[string]*Rollout{}}
	ids := s.DeviceIDs()
	desired := map[string]*Definition{}
	for _, id := range ids {
		if def := Desired(s, s.Devices[id]); def != nil {
			desired[id] = def
		}
	}
	// Devices whose deployment was withdrawn (rolled back, aborted) go to
	// what they should have now at once: they ran it before.
	for _, id := range ids {
		d := s.Devices[id]
		a := d.Assignment
		if a == nil {
			continue
		}
		cur := s.Definitions[a.Deployment]
		if cur == nil || !withdrawn(cur, s.Rollouts[cur.Name]) || cur.ManifestDigest() != a.ManifestDigest {
			continue
		}
		if next := desired[id]; next != nil {
			p.Gives = append(p.Gives, Give{Device: id, Def: next, Wave: -1, Previous: a.Deployment, RollbackOf: a.Deployment})
		} else if prev := s.Definitions[a.Previous]; prev != nil && !withdrawn(prev, s.Rollouts[prev.Name]) {
			p.Gives = append(p.Gives, Give{Device: id, Def: prev, Wave: -1, Previous: a.Deployment, RollbackOf: a.Deployment})
		}
	}
	// Devices whose deployment was deleted take on the one they should
	// have now, as in Azure ("any deployed devices take on their next
	// highest priority deployment"): they are that one's candidates like
	// any device it targets, given it at once when its rollout is
	// completed, in its waves while it rolls out, not while it is paused
	// (planRollout). Devices that no other targets keep what they run:
	// nothing is removed, nothing rolled back; one offline that was
	// given the deleted deployment and has not taken it has it
	// withdrawn, lest it apply it when it returns (an online one has it
	// already, or in flight; once it goes offline without having taken
	// it, it is withdrawn then).
	for _, id := range ids {
		d := s.Devices[id]
		if a := d.Assignment; a != nil && s.Deleted[a.Deployment] != nil && desired[id] == nil && !d.Online && !taken(d) {
			p.Withdraw = append(p.Withdraw, Withdrawal{Device: id, Deployment: a.Deployment})
		}
	}
	// A deleted deployment's rollout record becomes a deleted one at the
	// tombstone's generation: its progress goes, and the generation stays
	// on the broker below which a definition of the name is a replay,
	// should someone put an older one back in the tombstone's place.
	for _, name := range slices.Sorted(maps.Keys(s.Deleted)) {
		del := s.Deleted[name]
		if ro := s.Rollouts[name]; ro == nil || ro.Phase != PhaseDeleted || ro.Generation != del.Generation {
			p.Rollouts[name] = DeletedRollout(name, del.Generation, now, controller)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(s.Definitions)) {
		def := s.Definitions[name]
		ro := s.Rollouts[name]
		fresh := &Rollout{Name: name, Generation: def.Generation, ManifestDigest: def.ManifestDigest(), Phase: PhaseRolling}
		switch {
		case ro == nil || ro.Generation > def.Generation || ro.ManifestDigest != def.ManifestDigest():
			ro = fresh // a new deployment, or a new manifest under its name
		case ro.Phase == PhaseRolledBack && def.State != StateRolledBack:
			ro = fresh // deployed again after a rollback
		}
		next := *ro
		if next.Phase == PhaseAborted && def.Generation > next.Generation {
			// Resumed after an abort: the current wave tries again.
			next.Phase, next.Reason, next.Converged = PhaseRolling, "", time.Time{}
		}
		next.Generation = def.Generation
		planRollout(p, s, def, &next, desired, ids, now)
		if next.Phase != ro.Phase || next.Wave != ro.Wave || !next.Converged.Equal(ro.Converged) ||
			!next.WaveStarted.Equal(ro.WaveStarted) || next.Reason != ro.Reason || next.Generation != ro.Generation ||
			s.Rollouts[name] == nil {
			next.At, next.Controller = now, controller
			p.Rollouts[name] = &next
		}
	}
	// One assignment per device per pass: a rollback's first.
	seen := map[string]bool{}
	p.Gives = slices.DeleteFunc(p.Gives, func(g Give) bool {
		dup := seen[g.Device]
		seen[g.Device] = true
		return dup
	})
	return p
}

// DeletedRollout is the rollout record of a deployment deleted at
// generation, written by who.
func DeletedRollout(name string, generation int64, now time.Time, who string) *Rollout {
	return &Rollout{Name: name, Generation: generation, Phase: PhaseDeleted, Reason: "deleted by the operator", At: now.UTC(), Controller: who}
}

// planRollout advances one deployment's rollout.
func planRollout(p *Plan, s *Snapshot, def *Definition, ro *Rollout, desired map[string]*Definition, ids []string, now time.Time) {
	switch {
	case def.State == StateRolledBack:
		ro.Phase, ro.Reason = PhaseRolledBack, "rolled back by the operator"
		return
	case ro.Phase == PhaseAborted:
		return
	}
	var targeted, given, candidates []string
	failed := 0
	var failures []string
	convergedAll := true
	for _, id := range ids {
		d := s.Devices[id]
		if desired[id] != def {
			continue
		}
		targeted = append(targeted, id)
		if !holds(d, def) {
			candidates = append(candidates, id)
			continue
		}
		given = append(given, id)
		switch o, why := Outcome(d); o {
		case OutcomeFailed:
			failed++
			failures = append(failures, id+": "+why)
			convergedAll = false
		case OutcomePending:
			if d.Online {
				convergedAll = false
			}
		}
	}
	if def.Rollout.Aborts(failed, len(given)) {
		ro.Phase = PhaseAborted
		ro.Reason = fmt.Sprintf("%d of %d devices failed (abortAfter %s): %s", failed, len(given), def.Rollout.AbortAfter, strings.Join(failures, "; "))
		return
	}
	if def.State == StatePaused {
		ro.Phase = PhasePaused
		return
	}
	if ro.Phase == PhasePaused {
		ro.Phase = PhaseRolling
	}
	total := len(targeted)
	if ro.Phase == PhaseCompleted {
		// Continuous: devices that match later get it at once.
		giveOut(p, def, candidates, total, len(def.Rollout.Waves)-1, s)
		return
	}
	allowed := def.Rollout.WaveTarget(ro.Wave, total)
	if len(given) < allowed {
		if ro.WaveStarted.IsZero() {
			ro.WaveStarted = now
		}
		ro.Phase, ro.Converged = PhaseRolling, time.Time{}
		giveOut(p, def, candidates, allowed-len(given), ro.Wave, s)
		return
	}
	if !convergedAll {
		ro.Phase, ro.Converged = PhaseRolling, time.Time{}
		return
	}
	if ro.Converged.IsZero() {
		ro.Converged, ro.Phase = now, PhaseSoaking
	}
	if now.Sub(ro.Converged) < time.Duration(def.Rollout.Soak) {
		ro.Phase = PhaseSoaking
		return
	}
	if ro.Wave >= len(def.Rollout.Waves)-1 {
		ro.Phase, ro.Reason = PhaseCompleted, ""
		giveOut(p, def, candidates, total, ro.Wave, s)
		return
	}
	ro.Wave++
	ro.WaveStarted, ro.Converged, ro.Phase = now, time.Time{}, PhaseRolling
	allowed = def.Rollout.WaveTarget(ro.Wave, total)
	giveOut(p, def, candidates, allowed-len(given), ro.Wave, s)
}

// giveOut assigns def to up to n candidates: online ones first, then in
// the deployment's stable order.
func giveOut(p *Plan, def *Definition, candidates []string, n, wave int, s *Snapshot) {
	if n <= 0 || len(candidates) == 0 {
		return
	}
	slices.SortFunc(candidates, func(a, b string) int {
		oa, ob := s.Devices[a].Online, s.Devices[b].Online
		if oa != ob {
			if oa {
				return -1
			}
			return 1
		}
		return cmp.Compare(rank(def.Name, a), rank(def.Name, b))
	})
	for _, id := range candidates[:min(n, len(candidates))] {
		g := Give{Device: id, Def: def, Wave: wave}
		if a := s.Devices[id].Assignment; a != nil {
			g.Previous = a.Deployment
			if s.Deleted[a.Deployment] != nil {
				g.DeletedFrom = a.Deployment
			}
		}
		p.Gives = append(p.Gives, g)
	}
}

// NextVersion is the version of a manifest sealed for a device whose
// last fleet version was prev: milliseconds since 1970 (above every
// version a device had before, as versions compare digit runs as
// numbers), then the deployment's name; always above prev.
func NextVersion(now time.Time, prev, name string) string {
	rev := now.UnixMilli()
	if p, _, ok := strings.Cut(prev, "-"); ok || prev != "" {
		if n, err := strconv.ParseInt(p, 10, 64); err == nil && n >= rev {
			rev = n + 1
		}
	}
	return strconv.FormatInt(rev, 10) + "-" + name
}
