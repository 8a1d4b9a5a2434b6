package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync/atomic"
	"time"
)

// Sealer prepares what a device receives for a definition's manifest: the
// manifest with its version set to version, signed, as the agent's MQTT
// source takes it; digest is what the device will report (the sha256 of
// the manifest bytes it applies).
type Sealer interface {
	Seal(manifest []byte, version string) (payload []byte, digest string, err error)
}

// Controller runs the fleet's rollouts while it holds the lease. It keeps
// nothing of its own: every pass reads the broker's retained state and
// writes its decisions back there, so a controller started after another
// died (or the broker restarted) carries on where things stand.
type Controller struct {
	Conn     *Conn
	ID       string
	Verifier Verifier
	Sealer   Sealer
	Log      *slog.Logger
	// LeaseTTL is how long a lease holds without renewal (default 15s);
	// Settle is how long a new claim waits before it counts (default 1s),
	// so that of two controllers claiming at once, the one the broker
	// retained last wins and the other sees it.
	LeaseTTL time.Duration
	Settle   time.Duration
	// Tick is the longest wait between passes (default 1s; every change
	// on the broker also starts one).
	Tick time.Duration
	// Resend is how long an online device may go without taking the
	// deployment it was given before the controller publishes it to the
	// device again (default 15s; twice as long after each time, up to
	// 10 minutes).
	Resend time.Duration

	holding   bool
	claimedAt time.Time
	invalid   map[string]string // logged refusals of definitions
	// seen is the highest generation of each definition seen: one below
	// it is a replay, even when the broker's records were cleared.
	seen map[string]int64
	// kept is the newest valid definition (or tombstone) seen of each
	// name, with its retained bytes: put back over a replay (restore).
	kept     map[string]keptDefinition
	restored map[string]*restoreLog
	resent   map[string]resent // device -> its deployment published again
	// due: devices whose record (of this version) was written and whose
	// manifest perhaps not (its publish failed): published at the next
	// pass unless taken by then.
	due map[string]string
	// adopt: the lease was just taken; every record another controller
	// wrote and its device has not taken is published at once (that
	// controller may have died between a record and its manifest).
	adopt bool
	// Records written, not yet seen held by the broker (verify).
	unverified map[string][]byte
	nextCheck  time.Time
	checks     int // failed checks in a row
	// passes counts the passes that acted and ended without an error
	// (Passes).
	passes atomic.Uint64
}

// keptDefinition is a definition as it was retained, signed.
type keptDefinition struct {
	def     *Definition
	payload []byte
}

// restoreLog bounds the log of a replay war: the first restore of a name
// is logged at once, later ones once a minute with their count.
type restoreLog struct {
	at      time.Time
	pending int
}

// resent is a deployment published to a device again.
type resent struct {
	version string
	at      time.Time // when it was given or last published again
	n       int       // how many times it was published again
}

// maxResendWait bounds the wait between two publications of the same
// deployment to a device that does not take it.
const maxResendWait = 10 * time.Minute

// Run works until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 15 * time.Second
	}
	if c.Settle == 0 {
		c.Settle = time.Second
	}
	if c.Tick == 0 {
		c.Tick = time.Second
	}
	if c.Resend == 0 {
		c.Resend = 15 * time.Second
	}
	c.resent = map[string]resent{}
	c.due = map[string]string{}
	c.unverified = map[string][]byte{}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	c.invalid = map[string]string{}
	c.seen = map[string]int64{}
	c.kept = map[string]keptDefinition{}
	c.restored = map[string]*restoreLog{}
	t := time.NewTimer(0)
	defer t.Stop()
	// Taken before each pass: what changes during a pass starts the next.
	changed := c.Conn.View().Changed()
	for {
		select {
		case <-ctx.Done():
			c.release(context.WithoutCancel(ctx))
			return nil
		case <-t.C:
		case <-changed:
			// Let a burst of retained messages land before a pass.
			select {
			case <-time.After(50 * time.Millisecond):
			case <-ctx.Done():
			}
		}
		changed = c.Conn.View().Changed()
		if err := c.pass(ctx); err != nil && ctx.Err() == nil {
			c.Log.Warn("fleet pass", "err", err)
		}
		t.Reset(c.Tick)
	}
}

// Passes is how many passes the controller has ended connected, holding
// the lease, without an error: each took a snapshot of its connection's
// view first and published what it decided before it ended. So once that
// view holds a message, the second such pass to end after that has seen
// it and acted on it (the first may have begun before it came); tests
// wait on that to say "the controller saw it and did nothing", and the
// debug log's "fleet pass done" lines carry the same count for a
// controller in another process.
func (c *Controller) Passes() uint64 { return c.passes.Load() }

// pass is one look at the broker and the decisions it brings.
func (c *Controller) pass(ctx context.Context) error {
	start := time.Now()
	s := c.Conn.View().Snapshot(c.Verifier)
	s.refuseOlder(func(name string) int64 { return c.seen[name] })
	recorded := s.recordedGenerations()
	for _, m := range []map[string]*Definition{s.Definitions, s.Deleted} {
		for name, d := range m {
			c.seen[name] = max(c.seen[name], d.Generation, recorded[name])
			if k, ok := c.kept[name]; (!ok || d.Generation >= k.def.Generation) && s.Payloads[name] != nil {
				c.kept[name] = keptDefinition{d, s.Payloads[name]}
			}
		}
	}
	for name, why := range s.Invalid {
		if c.invalid[name] != why {
			c.invalid[name] = why
			c.Log.Warn("fleet deployment refused", "deployment", name, "reason", why)
		}
	}
	for topic, n := range s.Oversized {
		if why := fmt.Sprintf("%d bytes", n); c.invalid[topic] != why {
			c.invalid[topic] = why
			c.Log.Warn("retained record over its bound: not taken", "topic", topic, "bytes", n)
		}
	}
	for topic, why := range s.Refused {
		if c.invalid[topic] != why {
			c.invalid[topic] = why
			c.Log.Warn("state document refused: not taken", "topic", topic, "reason", why)
		}
	}
	if !s.Connected {
		return nil
	}
	now := time.Now()
	if !c.lease(ctx, s, now) {
		clear(c.unverified) // another controller writes now
		clear(c.due)
		return nil
	}
	if err := c.restore(ctx, s, now); err != nil {
		return err
	}
	plan := MakePlan(s, now, c.ID)
	if err := c.execute(ctx, s, plan, now); err != nil {
		return err
	}
	if err := c.resend(ctx, s, plan, now); err != nil {
		return err
	}
	if err := c.verify(ctx, now); err != nil {
		return err
	}
	n := c.passes.Add(1)
	c.Log.Debug("fleet pass done", "pass", n, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// restore puts back, over each replayed definition (an older signed one
// retained on a deployment's topic after a newer one), the newest one
// this controller saw, as it was signed: the replay is refused either
// way, but left on the broker it would take the deployment out of force
// (a device that a lower priority targets would be given that one), and
// it would be all a controller started later finds. The deployment stays
// in force in this pass too. A controller that never saw a newer one
// (started after the replay) cannot put it back: the operator deploys
// again (docs/fleet.md).
func (c *Controller) restore(ctx context.Context, s *Snapshot, now time.Time) error {
	for _, name := range slices.Sorted(maps.Keys(s.Replayed)) {
		k, ok := c.kept[name]
		if !ok || k.def.Generation < c.seen[name] || s.Definitions[name] != nil || s.Deleted[name] != nil {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := c.Conn.Publish(pctx, c.Conn.cfg.Topics.Definition(name), k.payload, true)
		cancel()
		if err != nil {
			return fmt.Errorf("put back deployment %s: %w", name, err)
		}
		if k.def.State == StateDeleted {
			s.Deleted[name] = k.def
		} else {
			s.Definitions[name] = k.def
		}
		s.Payloads[name] = k.payload
		r := c.restored[name]
		if r == nil {
			r = &restoreLog{}
			c.restored[name] = r
		}
		r.pending++
		if now.Sub(r.at) >= time.Minute {
			c.Log.Warn("replayed fleet deployment replaced by the newest one seen", "deployment", name,
				"generation", k.def.Generation, "state", k.def.State, "times", r.pending, "reason", s.Invalid[name])
			r.at, r.pending = now, 0
		}
	}
	return nil
}

// checkAfter has records written at now read back a second later, when
// the devices' answers to a wave have mostly come.
func (c *Controller) checkAfter(now time.Time) {
	if c.checks == 0 {
		c.nextCheck = now.Add(time.Second)
	}
}

// verify reads back the assignment and rollout records written since
// the last check ([Conn.Check]) and publishes again those the broker
// does not hold: nats-server acknowledges a retained message it fails
// to store while its JetStream leaders move after a node died
// (docs/fleet.md), and a controller that restarted would give the
// device its deployment again under a new version. A record that holds
// another payload was written by someone else since: it is left alone.
// (The devices' manifests are not read back: a device that did not get
// its manifest is sent it again, see resend.)
func (c *Controller) verify(ctx context.Context, now time.Time) error {
	if len(c.unverified) == 0 || now.Before(c.nextCheck) {
		return nil
	}
	topics := slices.Sorted(maps.Keys(c.unverified))
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	held, err := c.Conn.Check(cctx, topics)
	cancel()
	if err != nil {
		c.nextCheck = now.Add(time.Second)
		return fmt.Errorf("read back the records written: %w", err)
	}
	var lost []Message
	for _, t := range topics {
		switch h := held[t]; {
		case bytes.Equal(h, c.unverified[t]):
			delete(c.unverified, t)
		case h != nil:
			delete(c.unverified, t) // written since by another
		default:
			lost = append(lost, Message{Topic: t, Payload: c.unverified[t]})
		}
	}
	if len(lost) == 0 {
		c.checks = 0
		return nil
	}
	c.checks++
	c.nextCheck = now.Add(min(time.Second<<min(c.checks, 5), 30*time.Second))
	c.Log.Warn("the broker acknowledged records it does not hold: publishing them again", "lost", len(lost), "of", len(topics),
		"first", lost[0].Topic, "times", c.checks)
	pctx, cancelP := context.WithTimeout(ctx, 30*time.Second)
	defer cancelP()
	return c.Conn.PublishAll(pctx, lost)
}

// lease takes, keeps and renews the lease; true while this controller
// may act.
func (c *Controller) lease(ctx context.Context, s *Snapshot, now time.Time) bool {
	l := s.Lease
	mine := l != nil && l.Holder == c.ID
	switch {
	case mine && l.Until.Sub(now) > c.LeaseTTL/2:
	case mine:
		if err := c.publishLease(ctx, now); err != nil {
			c.Log.Warn("renew the fleet lease", "err", err)
			return false
		}
	case l == nil || now.After(l.Until) || !s.Controllers[l.Holder] && known(s.Controllers, l.Holder):
		if c.holding {
			c.holding = false
			c.Log.Warn("fleet lease lost", "holder", "none")
		}
		if err := c.publishLease(ctx, now); err != nil {
			c.Log.Warn("claim the fleet lease", "err", err)
			return false
		}
		c.claimedAt = now
		return false
	default:
		if c.holding {
			c.holding = false
			c.Log.Warn("fleet lease lost", "holder", l.Holder)
		}
		return false
	}
	if !c.holding {
		if now.Sub(c.claimedAt) < c.Settle {
			return false
		}
		c.holding, c.adopt = true, true
		c.Log.Info("fleet lease acquired: this controller runs the rollouts")
	}
	return true
}

func known(m map[string]bool, k string) bool { _, ok := m[k]; return ok }

func (c *Controller) publishLease(ctx context.Context, now time.Time) error {
	b, _ := json.Marshal(Lease{Holder: c.ID, Until: now.Add(c.LeaseTTL).UTC(), At: now.UTC()})
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return c.Conn.Publish(pctx, c.Conn.cfg.Topics.Lease(), b, true)
}

// release gives the lease up on a clean stop, so another controller need
// not wait for it to expire.
func (c *Controller) release(ctx context.Context) {
	if !c.holding {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c.Conn.Publish(pctx, c.Conn.cfg.Topics.Lease(), []byte{}, true)
}

// execute publishes a plan: for each assignment the record first, then
// the sealed manifest on the device's deployment topic; then the
// rollouts. A record is the decision, and it comes first so that a
// controller (this one after a publish failed, or another after this one
// died) that finds a device's record without the device having taken it
// sends the same manifest under the same version again (resend), which a
// device that has it ignores. The other order made a second controller
// give the devices whose manifests were out and records were not the
// deployment again under a new version: they applied it twice.
func (c *Controller) execute(ctx context.Context, s *Snapshot, p *Plan, now time.Time) error {
	type key struct{ name, digest, version string }
	sealed := map[key]struct {
		payload []byte
		digest  string
	}{}
	topics := c.Conn.cfg.Topics
	var deps, recs []Message
	var versions []string
	for _, g := range p.Gives {
		prev := ""
		if a := s.Devices[g.Device].Assignment; a != nil {
			prev = a.Version
		}
		version := NextVersion(now, prev, g.Def.Name)
		k := key{g.Def.Name, g.Def.ManifestDigest(), version}
		sl, ok := sealed[k]
		if !ok {
			payload, digest, err := c.Sealer.Seal([]byte(g.Def.Manifest), version)
			if err != nil {
				return fmt.Errorf("seal %s for %s: %w", g.Def.Name, g.Device, err)
			}
			sl.payload, sl.digest = payload, digest
			sealed[k] = sl
		}
		a := Assignment{Deployment: g.Def.Name, Generation: g.Def.Generation, ManifestDigest: g.Def.ManifestDigest(),
			Version: version, Digest: sl.digest, Wave: g.Wave, At: now.UTC(), Previous: g.Previous, RollbackOf: g.RollbackOf}
		b, _ := json.Marshal(a)
		versions = append(versions, version)
		deps = append(deps, Message{Topic: topics.Deployment(g.Device), Payload: sl.payload})
		recs = append(recs, Message{Topic: topics.Assignment(g.Device), Payload: b})
		if g.RollbackOf != "" {
			c.Log.Info("device rolled back", "device", g.Device, "from", g.RollbackOf, "to", g.Def.Name, "version", version)
		} else if g.DeletedFrom != "" {
			c.Log.Info("device takes on its next deployment: its own was deleted", "device", g.Device, "from", g.DeletedFrom, "to", g.Def.Name, "version", version)
		} else {
			c.Log.Debug("device given a deployment", "device", g.Device, "deployment", g.Def.Name, "wave", g.Wave+1, "version", version)
		}
	}
	// In flight together, but every manifest after the records were
	// acknowledged.
	if len(deps) > 0 {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second+time.Duration(len(deps))*time.Millisecond)
		defer cancel()
		if err := c.Conn.PublishAll(pctx, recs); err != nil {
			return err
		}
		for i, r := range recs {
			c.unverified[r.Topic] = r.Payload
			// Due at the next pass unless it is taken by then.
			c.due[p.Gives[i].Device] = versions[i]
		}
		c.checkAfter(now)
		if err := c.Conn.PublishAll(pctx, deps); err != nil {
			return err
		}
		for _, g := range p.Gives {
			delete(c.due, g.Device)
		}
	}
	if err := c.withdraw(ctx, p); err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(p.Rollouts)) {
		r := p.Rollouts[name]
		old := s.Rollouts[name]
		switch {
		case r.Phase == PhaseDeleted:
			if old == nil || old.Phase != PhaseDeleted {
				c.Log.Info("deployment deleted: its devices take on their next deployment, or keep what they run", "deployment", name, "generation", r.Generation)
			}
		case old == nil || old.Phase != r.Phase || old.Wave != r.Wave:
			c.Log.Info("rollout", "deployment", name, "phase", r.Phase, "wave", r.Wave+1, "of", len(s.Definitions[name].Rollout.Waves), "reason", r.Reason)
		}
		b, _ := json.Marshal(r)
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := c.Conn.Publish(pctx, topics.Rollout(name), b, true)
		cancel()
		if err != nil {
			return err
		}
		c.unverified[topics.Rollout(name)] = b
		c.checkAfter(now)
	}
	return nil
}

// withdraw clears, for each device of p.Withdraw, the retained manifest
// of the deleted deployment it was given and has not taken, then its
// assignment record: the manifest first, so that a controller that dies
// between the two leaves a record that the next one acts on again.
func (c *Controller) withdraw(ctx context.Context, p *Plan) error {
	if len(p.Withdraw) == 0 {
		return nil
	}
	topics := c.Conn.cfg.Topics
	var deps, recs []Message
	for _, w := range p.Withdraw {
		deps = append(deps, Message{Topic: topics.Deployment(w.Device)})
		recs = append(recs, Message{Topic: topics.Assignment(w.Device)})
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second+time.Duration(len(deps))*time.Millisecond)
	defer cancel()
	if err := c.Conn.PublishAll(pctx, deps); err != nil {
		return err
	}
	if err := c.Conn.PublishAll(pctx, recs); err != nil {
		return err
	}
	for _, w := range p.Withdraw {
		// Not read back as a lost record, nor published again.
		delete(c.unverified, topics.Assignment(w.Device))
		delete(c.due, w.Device)
		delete(c.resent, w.Device)
		c.Log.Info("deleted deployment withdrawn from a device that had not taken it: it keeps what it runs", "device", w.Device, "deployment", w.Deployment)
	}
	return nil
}

// resend publishes again, to each online device that was given a
// deployment and has not taken it (its state names another), the same
// manifest under the same version: a broker can fail to hand a device
// the retained deployment waiting for it (a cluster node that lost
// track of new retained topics when another node died, docs/fleet.md),
// and a device that has it ignores it. It waits Resend after the
// assignment, then twice as long after each time, up to 10 minutes;
// not at all for a device whose manifest may not have gone out after
// its record (due), nor, in the first pass after taking the lease, for
// any device given a deployment by another controller (adopt).
func (c *Controller) resend(ctx context.Context, s *Snapshot, p *Plan, now time.Time) error {
	defer func() { c.adopt = false }()
	given := map[string]bool{}
	for _, g := range p.Gives {
		given[g.Device] = true
	}
	type key struct{ name, version string }
	sealed := map[key][]byte{}
	var msgs []Message
	for _, id := range s.DeviceIDs() {
		d := s.Devices[id]
		a := d.Assignment
		if a == nil || given[id] || taken(d) {
			delete(c.resent, id)
			if a != nil && !given[id] && c.due[id] == a.Version {
				delete(c.due, id)
			}
			continue
		}
		if !d.Online || d.State == nil {
			continue
		}
		def := s.Definitions[a.Deployment]
		if def == nil || def.ManifestDigest() != a.ManifestDigest {
			continue // the plan gives it what it should have
		}
		r := c.resent[id]
		if r.version != a.Version {
			r = resent{version: a.Version, at: a.At}
		}
		due := c.adopt || c.due[id] == a.Version
		if !due && now.Sub(r.at) < min(c.Resend<<min(r.n, 10), maxResendWait) {
			c.resent[id] = r
			continue
		}
		k := key{def.Name, a.Version}
		payload, ok := sealed[k]
		if !ok {
			b, digest, err := c.Sealer.Seal([]byte(def.Manifest), a.Version)
			if err != nil || digest != a.Digest {
				continue // not what the device was given
			}
			payload, sealed[k] = b, b
		}
		msgs = append(msgs, Message{Topic: c.Conn.cfg.Topics.Deployment(id), Payload: payload})
		r.at, r.n = now, r.n+1
		c.resent[id] = r
		delete(c.due, id)
		c.Log.Info("device has not taken the deployment it was given: publishing it again", "device", id,
			"deployment", a.Deployment, "version", a.Version, "times", r.n)
	}
	if len(msgs) == 0 {
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second+time.Duration(len(msgs))*time.Millisecond)
	defer cancel()
	return c.Conn.PublishAll(pctx, msgs)
}

// taken reports whether device d's state shows the assignment it was
// given: applying or applied it, refused it, or rolled it back.
func taken(d *Device) bool {
	a := d.Assignment
	if d.State == nil {
		return false
	}
	r := d.State.Properties.Reported
	return (r.Deployment != nil && r.Deployment.Digest == a.Digest) ||
		(r.Rejected != nil && r.Rejected.Digest == a.Digest) ||
		(r.RolledBackFrom != nil && r.RolledBackFrom.Version == a.Version)
}
