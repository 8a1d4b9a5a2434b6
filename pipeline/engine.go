package pipeline

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"ledge/internal/fault"
	"ledge/internal/outage"
	"ledge/pipeline/detect"
)

// Options are what the engine is built from; the appliance fills them in.
type Options struct {
	Config Config
	// DB holds the event log; nil runs without one.
	DB     *sql.DB
	Logger *slog.Logger
	// Library and Providers locate ONNX Runtime; it is loaded only when a
	// pipeline needs a detector.
	Library   string
	Providers []string
	// TensorRTCache is where the TensorRT provider keeps its engines.
	TensorRTCache string
	// Models resolves model names; nil: only model files work.
	Models ModelResolver
	// Publisher publishes into the in-process hub; nil: hub actions are
	// refused.
	Publisher Publisher
	// GPIO opens GPIO lines; nil: the Linux GPIO character device.
	GPIO GPIOOpener
	// StopGrace bounds how long a stopping pipeline's actions may finish
	// their queued events (default 2s).
	StopGrace time.Duration
}

// Engine runs pipelines. It is safe for concurrent use.
type Engine struct {
	opts  Options
	cfg   Config
	log   *slog.Logger
	pool  *detect.Pool
	evlog *EventLog
	bus   bus

	// applying serialises changes of the set of pipelines (a semaphore
	// rather than a mutex, so that a caller can stop waiting when its
	// context ends); see lockApply.
	applying chan struct{}

	mu      sync.Mutex // guards the fields below
	specs   []Spec
	running map[string]*instance
	// failed are the pipelines of specs that could not be built; Run
	// retries them with back-off.
	failed map[string]*buildFailure
	// held are the pipelines the operator stopped (Stop): the set applied
	// again keeps them stopped until Start, or until they leave the set.
	held    map[string]bool
	slots   map[string]*slot
	ctx     context.Context // set while Run runs
	stopped bool
}

// buildFailure is why a pipeline could not be built, and when it is tried
// again.
type buildFailure struct {
	reason string
	since  time.Time
	wait   time.Duration
	next   time.Time
}

// Build retries of failed pipelines back off from retryInitial to
// retryMax.
const (
	retryInitial = 10 * time.Second
	retryMax     = 5 * time.Minute
)

// NewEngine opens the event log and builds the pipelines of specs without
// starting them (Run does). A bad spec fails here with the field named,
// and nothing is left open; a valid spec that cannot be built (its model
// file is missing, say) becomes a failed pipeline, which Run retries,
// and the others run.
func NewEngine(ctx context.Context, opts Options, specs []Spec) (*Engine, error) {
	if err := opts.Config.Validate(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.StopGrace <= 0 {
		opts.StopGrace = 2 * time.Second
	}
	e := &Engine{opts: opts, cfg: opts.Config, log: opts.Logger, pool: detect.NewPool(opts.Library, opts.Providers, opts.TensorRTCache), applying: make(chan struct{}, 1),
		running: map[string]*instance{}, failed: map[string]*buildFailure{}, held: map[string]bool{}, slots: map[string]*slot{}}
	if opts.DB != nil {
		var err error
		if e.evlog, err = OpenEventLog(ctx, opts.DB, e.snapshotDir(), opts.Config.EventLog, e.log); err != nil {
			return nil, err
		}
	}
	if err := e.ApplyKeepGoing(ctx, specs); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *Engine) snapshotDir() string {
	if e.cfg.SnapshotDir != "" {
		return e.cfg.SnapshotDir
	}
	return filepath.Join(".", "snapshots")
}

// EventLog is the engine's event log (nil without a database).
func (e *Engine) EventLog() *EventLog { return e.evlog }

// Run starts the pipelines and the event log's retention, and stops them
// all when ctx ends.
func (e *Engine) Run(ctx context.Context) error {
	e.mu.Lock()
	if e.ctx != nil || e.stopped {
		e.mu.Unlock()
		return errors.New("pipeline engine: Run called twice")
	}
	e.ctx = ctx
	for _, in := range e.running {
		in.start(ctx, nil)
	}
	nrunning, nfailed := len(e.running), len(e.failed)
	e.mu.Unlock()
	e.log.Info("pipelines started", "count", nrunning, "failed", nfailed)
	var wg sync.WaitGroup
	if e.evlog != nil {
		wg.Go(func() { e.evlog.Run(ctx) })
	}
	wg.Go(func() { e.retryLoop(ctx) })
	<-ctx.Done()
	e.lockApply(context.Background())
	defer e.unlockApply()
	e.mu.Lock()
	e.stopped = true
	all := e.running // kept, stopped, for their final stats
	e.mu.Unlock()
	stopAll(slices.Collect(maps.Values(all)), e.opts.StopGrace)
	wg.Wait()
	e.pool.Wait()
	return nil
}

// Specs returns the current specs, in the order applied.
func (e *Engine) Specs() []Spec {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.specs)
}

// Spec returns the spec of the named pipeline.
func (e *Engine) Spec(name string) (Spec, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range e.specs {
		if s.Name == name {
			return s, nil
		}
	}
	return Spec{}, fault.New(fault.NotFound, "no pipeline named %q", name)
}

// Apply makes specs the set of pipelines. It validates every spec and
// builds every new or changed pipeline first; if anything fails, it returns
// the errors (each naming its pipeline and field) and nothing changes.
// Then it starts the new pipelines, reloads the changed ones (start new,
// swap, stop old; an unchanged source stays open) and stops the removed
// ones; unchanged pipelines keep running untouched, and unchanged failed
// ones stay failed (retried in the background) without failing Apply.
func (e *Engine) Apply(ctx context.Context, specs []Spec) error {
	if err := e.lockApply(ctx); err != nil {
		return err
	}
	defer e.unlockApply()
	return e.apply(ctx, specs, false)
}

// ApplyKeepGoing is Apply for what must run whatever one pipeline does
// (ledge.yaml's and the stored pipelines at start): a valid spec that
// cannot be built becomes a failed pipeline with its reason, retried with
// back-off, and the rest is applied. Invalid specs still fail it whole.
func (e *Engine) ApplyKeepGoing(ctx context.Context, specs []Spec) error {
	if err := e.lockApply(ctx); err != nil {
		return err
	}
	defer e.unlockApply()
	return e.apply(ctx, specs, true)
}

// lockApply takes the right to change the set of pipelines, waiting for
// it until ctx ends.
func (e *Engine) lockApply(ctx context.Context) error {
	if ctx.Err() != nil {
		return gaveUp(ctx, "change the pipelines")
	}
	select {
	case e.applying <- struct{}{}:
		return nil
	case <-ctx.Done():
		return gaveUp(ctx, "wait for another change of the pipelines")
	}
}

// gaveUp is the error of a change abandoned because ctx ended.
func gaveUp(ctx context.Context, what string) error {
	return fault.Wrap(fault.Timeout, fmt.Errorf("%s: %w", what, ctx.Err()))
}

func (e *Engine) unlockApply() { <-e.applying }

func (e *Engine) apply(ctx context.Context, specs []Spec, keepGoing bool) error {
	if err := ValidateSpecs(specs, "pipelines"); err != nil {
		return fault.Wrap(fault.Invalid, err)
	}
	e.mu.Lock()
	if e.stopped {
		e.mu.Unlock()
		return fault.New(fault.Unavailable, "pipeline engine stopped")
	}
	old := make(map[string]*instance, len(e.running))
	for k, v := range e.running {
		old[k] = v
	}
	prevSpecs := map[string]Spec{}
	for _, s := range e.specs {
		prevSpecs[s.Name] = s
	}
	prevFailed := maps.Clone(e.failed)
	specs = slices.Clone(specs)
	for i := range specs {
		if e.held[specs[i].Name] {
			specs[i].Disabled = true
		}
	}
	e.mu.Unlock()

	built := map[string]*instance{}
	failed := map[string]*buildFailure{}
	var errs []error
	now := time.Now()
	for _, s := range specs {
		if s.Disabled {
			continue
		}
		if cur, ok := old[s.Name]; ok && cur.spec.Equal(s) {
			continue
		}
		if f, ok := prevFailed[s.Name]; ok && prevSpecs[s.Name].Equal(s) {
			failed[s.Name] = f // unchanged: the retry loop owns it
			continue
		}
		in, err := e.build(ctx, s, e.slotFor(s.Name))
		if err != nil {
			if keepGoing {
				failed[s.Name] = &buildFailure{reason: err.Error(), since: now, wait: retryInitial, next: now.Add(retryInitial)}
				continue
			}
			errs = append(errs, fmt.Errorf("pipeline %q: %w", s.Name, err))
			continue
		}
		built[s.Name] = in
	}
	if len(errs) > 0 || ctx.Err() != nil {
		for _, in := range built {
			in.release()
		}
		e.pruneSlots() // of new pipelines that were not made
		if ctx.Err() != nil {
			return gaveUp(ctx, "apply pipelines")
		}
		return fault.Wrap(fault.Invalid, errors.Join(errs...))
	}

	e.mu.Lock()
	runCtx := e.ctx
	wanted := map[string]bool{}
	var stops []*instance
	for _, s := range specs {
		if s.Disabled {
			continue
		}
		wanted[s.Name] = true
		in, ok := built[s.Name]
		if !ok {
			continue // unchanged
		}
		prev := old[s.Name]
		if runCtx != nil {
			in.start(runCtx, prev)
		}
		e.running[s.Name] = in
		if prev != nil {
			stops = append(stops, prev)
			e.log.Info("pipeline reloaded", "pipeline", s.Name)
		} else if runCtx != nil {
			e.log.Info("pipeline started", "pipeline", s.Name)
		}
	}
	for name, in := range old {
		if !wanted[name] || failed[name] != nil {
			delete(e.running, name)
			stops = append(stops, in)
			e.log.Info("pipeline stopped", "pipeline", name)
		}
	}
	e.failed = failed
	e.specs = specs
	for name := range e.held {
		if !slices.ContainsFunc(specs, func(s Spec) bool { return s.Name == name }) {
			delete(e.held, name) // removed: added back, it is a new pipeline
		}
	}
	e.mu.Unlock()
	for name, f := range failed {
		if prevFailed[name] != f {
			e.slotFor(name).buildLog.Fail(f.reason, "retry", retryInitial)
		}
	}
	for name := range prevFailed {
		switch {
		case failed[name] != nil:
		case built[name] != nil:
			e.slotFor(name).buildLog.OK()
		default: // stopped or removed, not repaired
			e.slotFor(name).buildLog.Forget()
		}
	}
	stopAll(stops, e.opts.StopGrace)
	e.pruneSlots()
	return nil
}

// stopAll stops the instances together: each may take up to grace to let
// its actions finish, and one camera slow to close holds up no other.
func stopAll(ins []*instance, grace time.Duration) {
	var wg sync.WaitGroup
	for _, in := range ins {
		wg.Go(func() { in.stop(grace) })
	}
	wg.Wait()
}

// pruneSlots forgets the slots (counters, viewers, source state) of the
// pipelines no spec names any more: a pipeline added again under the same
// name starts afresh.
func (e *Engine) pruneSlots() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for name := range e.slots {
		if !slices.ContainsFunc(e.specs, func(s Spec) bool { return s.Name == name }) {
			delete(e.slots, name)
		}
	}
}

// existingSlot is slotFor for a pipeline that has a spec.
func (e *Engine) existingSlot(name string) (*slot, error) {
	if _, err := e.Spec(name); err != nil {
		return nil, err
	}
	return e.slotFor(name), nil
}

func (e *Engine) slotFor(name string) *slot {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.slots[name]
	if !ok {
		c := newCounters()
		log := e.log.With("pipeline", name)
		s = &slot{c: c, hub: newFrameHub(e.cfg.WatchFPS, &c.encodes),
			srcLog: outage.New(log, "pipeline source", 0), buildLog: outage.New(log, "pipeline", 0)}
		e.slots[name] = s
	}
	return s
}

// retryLoop tries the failed pipelines again when their back-off is due,
// until ctx ends.
func (e *Engine) retryLoop(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			e.retryFailed(ctx, now, false)
		}
	}
}

// retryFailed builds the failed pipelines that are due (all with force)
// and starts those that build. It returns the errors of those that still
// fail. When ctx ends it stops where it is and leaves the rest failed.
func (e *Engine) retryFailed(ctx context.Context, now time.Time, force bool, names ...string) error {
	if err := e.lockApply(ctx); err != nil {
		return err
	}
	defer e.unlockApply()
	e.mu.Lock()
	if e.stopped {
		e.mu.Unlock()
		return nil
	}
	var due []Spec
	for _, s := range e.specs {
		f := e.failed[s.Name]
		if f != nil && (force || !now.Before(f.next)) && (len(names) == 0 || slices.Contains(names, s.Name)) {
			due = append(due, s)
		}
	}
	e.mu.Unlock()
	var errs []error
	for _, s := range due {
		sl := e.slotFor(s.Name)
		in, err := e.build(ctx, s, sl)
		if err != nil && ctx.Err() != nil {
			return errors.Join(append(errs, err)...) // given up, not failed again
		}
		e.mu.Lock()
		f := e.failed[s.Name]
		if err != nil {
			f.reason, f.wait = err.Error(), min(2*f.wait, retryMax)
			f.next = time.Now().Add(f.wait)
			e.mu.Unlock()
			sl.buildLog.Fail(f.reason, "retry", f.wait)
			errs = append(errs, fmt.Errorf("pipeline %q: %w", s.Name, err))
			continue
		}
		delete(e.failed, s.Name)
		if e.ctx != nil {
			in.start(e.ctx, nil)
		}
		e.running[s.Name] = in
		e.mu.Unlock()
		sl.buildLog.OK()
	}
	return errors.Join(errs...)
}

// Put adds the pipeline spec, or replaces the one with its name.
func (e *Engine) Put(ctx context.Context, s Spec) error {
	return e.edit(ctx, func(specs []Spec) ([]Spec, error) {
		i := slices.IndexFunc(specs, func(x Spec) bool { return x.Name == s.Name })
		if i >= 0 {
			specs[i] = s
			return specs, nil
		}
		return append(specs, s), nil
	})
}

// Remove stops and forgets the named pipeline.
func (e *Engine) Remove(ctx context.Context, name string) error {
	return e.editOne(ctx, name, func(specs []Spec, i int) []Spec { return slices.Delete(specs, i, i+1) })
}

// Stop stops the named pipeline and keeps its spec (disabled).
func (e *Engine) Stop(ctx context.Context, name string) error {
	return e.holding(name, true, func() error {
		return e.editOne(ctx, name, func(specs []Spec, i int) []Spec { specs[i].Disabled = true; return specs })
	})
}

// holding marks name stopped by the operator (or no longer) for f, which
// applies the change; when f fails, the mark is as it was.
func (e *Engine) holding(name string, on bool, f func() error) error {
	e.mu.Lock()
	was := e.held[name]
	if on {
		e.held[name] = true
	} else {
		delete(e.held, name)
	}
	e.mu.Unlock()
	err := f()
	if err != nil {
		e.mu.Lock()
		if was {
			e.held[name] = true
		} else {
			delete(e.held, name)
		}
		e.mu.Unlock()
	}
	return err
}

// Start starts the named pipeline stopped by Stop; a failed pipeline is
// tried again at once (its error returned if it still fails).
func (e *Engine) Start(ctx context.Context, name string) error {
	if e.isFailed(name) {
		return e.Reload(ctx, name)
	}
	return e.holding(name, false, func() error {
		return e.editOne(ctx, name, func(specs []Spec, i int) []Spec { specs[i].Disabled = false; return specs })
	})
}

func (e *Engine) isFailed(name string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.failed[name] != nil
}

// Reload rebuilds the named pipeline from its spec (start new, swap, stop
// old; its camera and model stay open). A failed pipeline is tried again
// at once; its error is returned if it still fails.
func (e *Engine) Reload(ctx context.Context, name string) error {
	if e.isFailed(name) {
		if err := e.retryFailed(ctx, time.Now(), true, name); err != nil {
			return fault.Wrap(fault.Unavailable, err)
		}
		return nil
	}
	if err := e.lockApply(ctx); err != nil {
		return err
	}
	defer e.unlockApply()
	e.mu.Lock()
	in, ok := e.running[name]
	e.mu.Unlock()
	if !ok {
		return fault.New(fault.NotFound, "no running pipeline named %q", name)
	}
	n, err := e.build(ctx, in.spec, e.slotFor(name))
	if err != nil {
		return fault.Wrap(fault.Invalid, fmt.Errorf("pipeline %q: %w", name, err))
	}
	e.mu.Lock()
	if e.ctx != nil {
		n.start(e.ctx, in)
	}
	e.running[name] = n
	e.mu.Unlock()
	in.stop(e.opts.StopGrace)
	return nil
}

// edit applies f(the current specs) as one change of the set.
func (e *Engine) edit(ctx context.Context, f func([]Spec) ([]Spec, error)) error {
	if err := e.lockApply(ctx); err != nil {
		return err
	}
	defer e.unlockApply()
	specs, err := f(e.Specs())
	if err != nil {
		return err
	}
	return e.apply(ctx, specs, false)
}

// editOne is edit of the named pipeline's spec at index i.
func (e *Engine) editOne(ctx context.Context, name string, f func(specs []Spec, i int) []Spec) error {
	return e.edit(ctx, func(specs []Spec) ([]Spec, error) {
		i := slices.IndexFunc(specs, func(x Spec) bool { return x.Name == name })
		if i < 0 {
			return nil, fault.New(fault.NotFound, "no pipeline named %q", name)
		}
		return f(specs, i), nil
	})
}

// Stats returns the stats of every pipeline, sorted by name.
func (e *Engine) Stats() []Stats {
	e.mu.Lock()
	names := make([]string, 0, len(e.specs))
	for _, s := range e.specs {
		names = append(names, s.Name)
	}
	e.mu.Unlock()
	slices.Sort(names)
	out := make([]Stats, 0, len(names))
	for _, n := range names {
		if s, err := e.PipelineStats(n); err == nil {
			out = append(out, s)
		}
	}
	return out
}

// PipelineStats returns the stats of the named pipeline.
func (e *Engine) PipelineStats(name string) (Stats, error) {
	e.mu.Lock()
	in, running := e.running[name]
	stopped := e.stopped
	sl, ok := e.slots[name]
	i := slices.IndexFunc(e.specs, func(s Spec) bool { return s.Name == name })
	var (
		disabled bool
		failure  buildFailure
	)
	if i >= 0 {
		disabled = e.specs[i].Disabled
	}
	f := e.failed[name]
	if f != nil {
		failure = *f
	}
	e.mu.Unlock()
	if i < 0 {
		return Stats{}, fault.New(fault.NotFound, "no pipeline named %q", name)
	}
	s := Stats{Name: name, Running: running && in.started.Load() && !stopped}
	if ok {
		sl.c.fill(&s, time.Now())
		s.Source = sl.src.Get()
		s.Watchers = int(sl.hub.n.Load())
	}
	if running {
		in.stats(&s)
	}
	switch {
	case f != nil:
		s.State, s.Reason, s.FailingSince = StateFailed, failure.reason, failure.since
	case disabled:
		s.State, s.Reason = StateStopped, "stopped by the operator (start it again on the Pipelines page or POST /api/v1/pipelines/"+name+"/start)"
	case stopped:
		s.State, s.Reason = StateStopped, "ledge is stopping"
	case !running || !in.started.Load():
		s.State = StateStarting
	default:
		in.state(&s, sl)
	}
	return s, nil
}

// DetectorLoads counts the detectors (ONNX sessions) loaded since the
// engine was made; sharing and reloads do not add to it.
func (e *Engine) DetectorLoads() uint64 { return e.pool.Loads() }

// DetectorsOpen is the number of distinct detectors open now.
func (e *Engine) DetectorsOpen() int { return e.pool.Open() }

// Watch registers a viewer of the named pipeline's annotated frames, at
// most fps a second (0: the engine's watchFps, which also caps it). The
// channel holds the newest JPEG (older ones are dropped); frames are only
// encoded while at least one viewer is registered, as often as the most
// demanding one asks. Call cancel when done.
func (e *Engine) Watch(name string, fps float64) (<-chan JPEG, func(), error) {
	sl, err := e.existingSlot(name)
	if err != nil {
		return nil, nil, err
	}
	ch, cancel := sl.hub.watch(fps)
	return ch, cancel, nil
}

// LatestFrame returns the newest annotated frame encoded for viewers of
// the named pipeline (empty when nobody watched yet).
func (e *Engine) LatestFrame(name string) (JPEG, error) {
	sl, err := e.existingSlot(name)
	if err != nil {
		return JPEG{}, err
	}
	return sl.hub.last(), nil
}

// Subscribe returns a subscription to the events of every pipeline (and
// their source state changes) with a channel of buf events (default 64);
// a subscriber that falls behind loses events, counted by Dropped.
func (e *Engine) Subscribe(buf int) *Subscription { return e.bus.subscribe(buf) }
