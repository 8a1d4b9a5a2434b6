package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docker/docker/api/types/events"

	"ledge/agent/manifest"
	"ledge/agent/workload"
)

// desired is a deployment the reconciler is asked to make true.
type desired struct {
	dep *Deployment
	man *manifest.Manifest
}

// outcome tells the agent a deployment converged or failed.
type outcome struct {
	id     int64
	state  string // StateConverged or StateFailed
	reason string
}

// engineMsg is news from the engine watcher.
type engineMsg struct {
	up    bool
	down  error
	event *events.Message
}

// reconciler keeps the containers as the desired deployment asks. All of
// its state is owned by the goroutine in run; other goroutines reach it
// through setDesired and read snapshot(). It never blocks on a pull.
type reconciler struct {
	cfg        Config
	eng        *engine
	store      *store
	log        *slog.Logger
	identities Identities
	workload   *workload.Server // nil: no workload API
	policy     *Policy
	deviceID   string
	instance   string
	bus        *broadcaster
	count      *counters
	now        func() time.Time
	bootTime   time.Time
	// sectionsReady reports whether the deployment's sections are done
	// (ready), and why not; failed means they will not get there.
	sectionsReady func() (ready bool, failed string)
	// sectionsProgress is a counter that changes while sections work
	// (model downloads): a change counts as deployment progress.
	sectionsProgress func() int64
	outcomes         chan<- outcome

	pendingMu sync.Mutex // guards pending
	pending   *desired
	wake      chan struct{} // cap 1: pending was set
	engineCh  chan engineMsg
	pullCh    chan pullMsg
	resyncCh  chan chan struct{}              // Resync requests; closed when done
	reqCh     chan func(context.Context)      // work run on the loop (RestartModule)
	snap      atomic.Pointer[runtimeSnapshot] // immutable once stored: readers share its maps
	pullWG    sync.WaitGroup                  // pull goroutines
	pullSem   chan struct{}                   // bounds concurrent pulls

	// Owned by run.
	want           *desired
	mods           map[string]*modState
	pulls          map[string]*pullState
	connected      bool
	engineErr      string
	downAtStart    bool      // the engine did not answer since the start (told once)
	disconnectedAt time.Time // start of the last engine outage
	afterOutage    bool      // the next reconcile follows an engine outage
	gateway        string
	watch          *convergeWatch
	lastResync     time.Time
	platform       PlatformInfo
}

// convergeWatch tracks whether the current deployment has converged.
type convergeWatch struct {
	id           int64
	started      time.Time
	lastProgress time.Time
	sectionWork  int64  // last sectionsProgress seen
	done         bool   // converged (reported once)
	failed       bool   // reported failed; converging later is still reported
	failure      string // a permanent failure seen (bad image, create error)
}

// modState is the reconciler's view of one module.
type modState struct {
	name       string
	def        *manifest.Module // desired; nil while being removed
	spec       *containerSpec   // desired container; nil when it cannot be built
	c          *containerInfo   // the container, nil when there is none
	stats      moduleStats
	health     string
	waiting    string // why it is not created yet (image, earlier modules)
	expectStop bool   // the agent is stopping it: its exit is not a failure
	pullImage  string // image being pulled for it
	saved      []byte // stats as last persisted
	// failing: its failure (backoff, failed, unhealthy) is in the log at
	// WARN; later failures are INFO until it has run for
	// rollback.stableFor, which is logged as its recovery.
	failing bool
}

// runtimeSnapshot is what readers see of the reconciler.
type runtimeSnapshot struct {
	connected bool
	engineErr string
	platform  PlatformInfo
	modules   map[string]ModuleReport
}

func newReconciler(a *Agent) *reconciler {
	return &reconciler{
		cfg: a.cfg, eng: a.eng, store: a.store, log: a.log, identities: a.opts.Identities, workload: a.workload, policy: a.policy,
		deviceID: a.opts.DeviceID, instance: a.instance, bus: a.bus, count: a.count, now: time.Now, bootTime: bootTime(),
		wake: make(chan struct{}, 1), engineCh: make(chan engineMsg, 64), pullCh: make(chan pullMsg, 64), resyncCh: make(chan chan struct{}), reqCh: make(chan func(context.Context)), pullSem: make(chan struct{}, a.cfg.Pull.Concurrency),
		mods: map[string]*modState{}, pulls: map[string]*pullState{},
	}
}

// setDesired hands the reconciler a deployment; the latest one wins.
func (r *reconciler) setDesired(d *desired) {
	r.pendingMu.Lock()
	r.pending = d
	r.pendingMu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *reconciler) snapshot() *runtimeSnapshot {
	if s := r.snap.Load(); s != nil {
		return s
	}
	return &runtimeSnapshot{}
}

// resyncEvery is how often the reconciler compares everything with the
// engine even when no event said anything changed.
const resyncEvery = time.Minute

// run is the reconciler's loop.
func (r *reconciler) run(ctx context.Context) error {
	stats, err := r.store.loadModules(ctx)
	if err != nil {
		return err
	}
	for name, s := range stats {
		saved, _ := json.Marshal(s)
		r.mods[name] = &modState{name: name, stats: s, saved: saved}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { r.watchEngine(ctx) })
	defer r.pullWG.Wait()
	defer r.cancelPulls()

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		r.checkConvergence()
		r.publish()
		timer.Reset(max(time.Until(r.nextWake()), time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
			r.pendingMu.Lock()
			d := r.pending
			r.pending = nil
			r.pendingMu.Unlock()
			if d != nil {
				r.takeDesired(d)
				r.reconcile(ctx)
			}
		case m := <-r.engineCh:
			r.handleEngine(ctx, m)
		case m := <-r.pullCh:
			r.handlePull(ctx, m)
		case <-timer.C:
			r.tick(ctx)
		case f := <-r.reqCh:
			f(ctx)
		case done := <-r.resyncCh:
			r.reconcile(ctx)
			r.checkConvergence()
			r.publish()
			close(done)
		}
	}
}

// takeDesired switches to a new deployment.
func (r *reconciler) takeDesired(d *desired) {
	r.want = d
	now := r.now()
	r.watch = &convergeWatch{id: d.dep.ID, started: now, lastProgress: now}
	// Pulls of images the new deployment does not use are cut; finished
	// pulls are forgotten so "always" pulls again.
	need := map[string]bool{}
	for _, m := range d.man.Modules {
		need[m.Image] = true
	}
	for ref, p := range r.pulls {
		if !p.done && !need[ref] {
			p.cancel()
		}
		if p.done || !need[ref] {
			delete(r.pulls, ref)
		}
	}
	for _, st := range r.mods {
		// A new deployment is a new attempt: its first failure is a WARN.
		st.def, st.spec, st.waiting, st.failing = nil, nil, "", false
	}
	for i := range d.man.Modules {
		m := &d.man.Modules[i]
		st := r.mod(m.Name)
		st.def = m
	}
}

func (r *reconciler) mod(name string) *modState {
	st := r.mods[name]
	if st == nil {
		st = &modState{name: name}
		r.mods[name] = st
	}
	return st
}

// nextWake is the earliest moment something is due: a restart, a
// convergence check, the rollback deadline, a resync.
func (r *reconciler) nextWake() time.Time {
	next := r.lastResync.Add(resyncEvery)
	for _, st := range r.mods {
		if st.def != nil && st.stats.Status == StatusBackoff && !st.stats.NextRestart.IsZero() && st.stats.NextRestart.Before(next) {
			next = st.stats.NextRestart
		}
		if st.c != nil && st.c.Running && !st.stats.LastStart.IsZero() {
			if t := st.stats.LastStart.Add(r.cfg.Rollback.StableFor); t.After(r.now()) && t.Before(next) {
				next = t
			}
		}
	}
	for _, p := range r.pulls {
		if p.done && p.err != nil && !p.retryAt.IsZero() && p.retryAt.Before(next) {
			next = p.retryAt
		}
	}
	if w := r.watch; w != nil && !w.done {
		if t := w.lastProgress.Add(r.cfg.Rollback.Timeout); t.Before(next) {
			next = t
		}
		if t := r.now().Add(time.Second); t.Before(next) && r.sectionsReady != nil {
			next = t // sections report in the background: look again soon
		}
	}
	return next
}

// tick runs what is due: back-off restarts and the periodic resync.
func (r *reconciler) tick(ctx context.Context) {
	now := r.now()
	if !r.connected {
		return
	}
	for _, name := range slices.Sorted(maps.Keys(r.mods)) {
		st := r.mods[name]
		if st.def != nil && st.stats.Status == StatusBackoff && !st.stats.NextRestart.IsZero() && !now.Before(st.stats.NextRestart) {
			r.restart(ctx, st)
		}
	}
	r.noteRecoveries(now)
	retry := false
	for _, p := range r.pulls {
		if p.done && p.err != nil && !p.retryAt.IsZero() && !now.Before(p.retryAt) {
			p.retryAt, retry = time.Time{}, true
		}
	}
	if retry || now.Sub(r.lastResync) >= resyncEvery {
		r.reconcile(ctx)
	}
}

// noteRecoveries logs, once, that a module whose failure was logged has
// run for rollback.stableFor since (the reconciler wakes then: nextWake).
func (r *reconciler) noteRecoveries(now time.Time) {
	for _, name := range slices.Sorted(maps.Keys(r.mods)) {
		st := r.mods[name]
		if !st.failing || st.def == nil || st.c == nil || !st.c.Running || st.stats.Status != StatusRunning || st.stats.LastStart.IsZero() {
			continue
		}
		if up := now.Sub(st.stats.LastStart); up >= r.cfg.Rollback.StableFor {
			st.failing = false
			r.log.Info("module recovered", "module", st.name, "up", up.Round(time.Millisecond), "restarts", st.stats.RestartCount)
		}
	}
}

// handleEngine reacts to the engine coming, going and its events.
func (r *reconciler) handleEngine(ctx context.Context, m engineMsg) {
	switch {
	case m.up:
		r.connected, r.engineErr = true, ""
		if !r.disconnectedAt.IsZero() {
			r.afterOutage = true
			r.log.Info("docker engine is back")
		} else if r.downAtStart {
			r.log.Info("docker engine answers", "host", r.eng.cli.DaemonHost())
		}
		r.downAtStart = false
		v, os, arch := r.eng.version(ctx)
		r.platform = PlatformInfo{OS: os, Architecture: arch, Version: v}
		r.reconcile(ctx)
	case m.down != nil:
		if r.connected {
			r.log.Warn("docker engine unreachable", "host", r.eng.cli.DaemonHost(), "err", m.down)
			r.disconnectedAt = r.now()
		} else if r.disconnectedAt.IsZero() && !r.downAtStart {
			r.log.Warn("docker engine unreachable at start: modules wait for it", "host", r.eng.cli.DaemonHost(), "err", m.down)
			r.downAtStart = true
		}
		r.connected, r.engineErr = false, m.down.Error()
	case m.event != nil:
		r.handleEvent(ctx, m.event)
	}
}

// watchEngine follows the engine's container events, reconnecting with
// back-off when the engine goes away.
func (r *reconciler) watchEngine(ctx context.Context) {
	wait := 200 * time.Millisecond
	send := func(m engineMsg) bool {
		select {
		case r.engineCh <- m:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for ctx.Err() == nil {
		sctx, cancel := context.WithCancel(ctx)
		msgs, errs := r.eng.events(sctx)
		err := r.eng.ping(sctx)
		if err == nil {
			wait = 200 * time.Millisecond
			if !send(engineMsg{up: true}) {
				cancel()
				return
			}
		loop:
			for {
				select {
				case ev := <-msgs:
					if !send(engineMsg{event: &ev}) {
						break loop
					}
				case err = <-errs:
					break loop
				}
			}
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = context.Canceled
		}
		if !send(engineMsg{down: err}) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(wait*2, 5*time.Second)
	}
}

// publish stores the snapshot readers see and persists what changed.
func (r *reconciler) publish() {
	s := &runtimeSnapshot{connected: r.connected, engineErr: r.engineErr, platform: r.platform, modules: map[string]ModuleReport{}}
	for name, st := range r.mods {
		if st.def == nil && st.c == nil {
			continue
		}
		s.modules[name] = r.report(st)
	}
	r.snap.Store(s)
}

// report is a module's reported state.
func (r *reconciler) report(st *modState) ModuleReport {
	mr := ModuleReport{Type: "docker", RuntimeStatus: StatusUnknown, ExitCode: st.stats.ExitCode,
		RestartCount: st.stats.RestartCount, StatusDescription: st.stats.Description,
		LastStartTimeUtc: azureTime(st.stats.LastStart), LastExitTimeUtc: azureTime(st.stats.LastExit),
		LastRestartTimeUtc: azureTime(st.stats.LastRestart), Health: st.health}
	if st.stats.Status != "" {
		mr.RuntimeStatus = st.stats.Status
	}
	if st.stats.Status == StatusBackoff {
		mr.NextRestartTimeUtc = azureTime(st.stats.NextRestart)
	}
	if m := st.def; m != nil {
		mr.Version, mr.Status, mr.RestartPolicy, mr.ImagePullPolicy = m.Version, string(m.Status), string(m.RestartPolicy), string(m.ImagePullPolicy)
		if m.StartupOrder != manifest.DefaultStartupOrder {
			o := m.StartupOrder
			mr.StartupOrder = &o
		}
		if len(m.Env) > 0 {
			mr.Env = map[string]EnvValue{}
			for k, v := range m.Env {
				mr.Env[k] = EnvValue{Value: v}
			}
		}
		mr.Settings = ModuleSettings{Image: m.Image, CreateOptions: chunkCreateOptions(string(m.CreateOptions))}
	}
	if st.spec != nil {
		for _, e := range st.spec.Elevated {
			mr.Elevated = append(mr.Elevated, e.Setting+" "+e.Value)
		}
	}
	if st.c != nil {
		mr.ContainerID = st.c.ID
		mr.Settings.ImageHash = st.c.ImageID
		if st.def == nil {
			mr.Settings.Image = st.c.Image
		}
	}
	if st.waiting != "" && st.stats.Status == "" {
		mr.StatusDescription = st.waiting
	}
	if st.pullImage != "" {
		if p := r.pulls[st.pullImage]; p != nil && !p.done {
			pp := p.progress
			mr.Pull = &pp
		}
	}
	return mr
}

// setStatus changes a module's runtime status, persisting and announcing
// it.
func (r *reconciler) setStatus(ctx context.Context, st *modState, status, desc string) {
	changed := st.stats.Status != status || st.stats.Description != desc
	st.stats.Status, st.stats.Description = status, desc
	if status != StatusBackoff {
		st.stats.NextRestart = time.Time{}
	}
	if st.c != nil {
		st.stats.ContainerID = st.c.ID
	}
	r.saveStats(ctx, st)
	if changed {
		ev := Event{Kind: EventModule, Module: st.name, RuntimeStatus: status, ExitCode: st.stats.ExitCode,
			RestartCount: st.stats.RestartCount, NextRestart: st.stats.NextRestart, Description: desc}
		if status == StatusBackoff && !st.stats.LastExit.IsZero() {
			ev.BackoffSeconds = st.stats.NextRestart.Sub(st.stats.LastExit).Seconds()
		}
		r.bus.publish(ev)
		lvl := slog.LevelInfo
		if (status == StatusFailed || status == StatusBackoff || status == StatusUnhealthy) && !st.failing {
			lvl, st.failing = slog.LevelWarn, true
		}
		r.log.Log(ctx, lvl, "module", "module", st.name, "status", status, "description", desc,
			"restarts", st.stats.RestartCount)
	}
}

// saveStats persists a module's statistics when they changed (a no-op
// pass writes nothing: on an SD card every write counts).
func (r *reconciler) saveStats(ctx context.Context, st *modState) {
	data, _ := json.Marshal(st.stats)
	if bytes.Equal(data, st.saved) {
		return
	}
	if err := r.store.saveModule(context.WithoutCancel(ctx), st.name, st.stats); err != nil {
		r.log.Error("persist module state", "module", st.name, "err", err)
		return
	}
	st.saved = data
}

// sortedByStartup returns the desired modules in start order: by
// startupOrder, then name.
func (r *reconciler) sortedByStartup() []*modState {
	var out []*modState
	for _, st := range r.mods {
		if st.def != nil {
			out = append(out, st)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].def, out[j].def
		if a.StartupOrder != b.StartupOrder {
			return a.StartupOrder < b.StartupOrder
		}
		return a.Name < b.Name
	})
	return out
}

func (r *reconciler) cancelPulls() {
	for _, p := range r.pulls {
		if !p.done {
			p.cancel()
		}
	}
}
