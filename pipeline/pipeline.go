package pipeline

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"gocv.io/x/gocv"

	"ledge/internal/fanout"
	"ledge/internal/outage"
	"ledge/pipeline/detect"
	"ledge/pipeline/source"
)

// slot is what outlives the reloads of a pipeline with a given name: its
// counters, its viewers and its source state.
type slot struct {
	c       *counters
	results fanout.Bus[Result] // per-frame results (Engine.Results)
	hub     *frameHub
	src     source.Watch
	// srcLog tells the log when the source fails and recovers; buildLog
	// when the pipeline cannot be built and when it can again.
	srcLog, buildLog *outage.Log
}

// instance is one built pipeline: its stages and the goroutines running
// them. It is started once and stopped once.
type instance struct {
	spec   Spec
	eng    *Engine
	slot   *slot
	log    *slog.Logger
	target source.Target

	cap      *capture // shared with the next instance when the source is unchanged
	ownsCap  bool
	mb       *mailbox
	det      *detect.Stage
	gate     *motionGate
	zones    []zone
	tracker  *tracker
	types    []string
	actions  []*actionRunner
	snapshot *actionRunner // runs in the dispatcher
	quality  int
	events   chan *Event

	// Process stage only: the tracked objects given a snapshot frame, and
	// the last frame (for the events of objects still in view at stop).
	snapped map[int64]bool
	last    source.Frame
	version string
	// Dispatcher only: each tracked object's stored event.
	objects map[int64]*objectRow

	cancel   context.CancelFunc // process stage
	actCtx   context.Context    // actions: ends at the hard stop
	actStop  context.CancelFunc
	wg       sync.WaitGroup // process and dispatch
	actWG    sync.WaitGroup // action runners
	started  atomic.Bool
	procDone chan struct{}
}

// build prepares a pipeline: it resolves and loads (or shares) the model
// and makes the actions. It starts nothing. Errors name the spec field.
func (e *Engine) build(ctx context.Context, s Spec, sl *slot) (_ *instance, err error) {
	t, err := s.Source.Parse()
	if err != nil {
		return nil, fmt.Errorf("source.url: %w", err)
	}
	in := &instance{spec: s, eng: e, slot: sl, target: t, log: e.log.With("pipeline", s.Name),
		zones: buildZones(s.Zones), types: s.Events.Types, procDone: make(chan struct{}),
		snapped: map[int64]bool{}, objects: map[int64]*objectRow{}}
	defer func() {
		if err != nil {
			in.release()
		}
	}()
	if s.Detect != nil {
		if in.det, err = detect.NewStage(ctx, *s.Detect, detect.Layout(e.cfg.Detector), e.pool, e.opts.Models); err != nil {
			return nil, fmt.Errorf("detect.model: %w", err)
		}
	}
	in.tracker = newTracker(s.Tracker, in.zones)
	q := s.Events.Queue
	if q == 0 {
		q = 256
	}
	in.events = make(chan *Event, q)
	for i, a := range s.Actions {
		name := a.name(i)
		var act action
		switch a.Type {
		case "log":
			lv := slog.LevelInfo
			lv.UnmarshalText([]byte(a.Level))
			act = &logAction{log: in.log, level: lv}
		case "webhook":
			act = newWebhookAction(a)
		case "mqtt":
			if a.URL == "" {
				if e.opts.Publisher == nil {
					return nil, fmt.Errorf("actions[%d].url: no in-process hub to publish to: set a broker URL", i)
				}
				act = &hubAction{pub: e.opts.Publisher, pipeline: s.Name, output: cmp.Or(a.Output, "events")}
			} else {
				act = newMQTTAction(a, s.Name, fmt.Sprintf("ledge-%s-%s-%d", s.Name, name, time.Now().UnixNano()%1e6))
			}
		case "hub":
			if e.opts.Publisher == nil {
				return nil, fmt.Errorf("actions[%d].type: no in-process hub in this ledge", i)
			}
			act = &hubAction{pub: e.opts.Publisher, pipeline: s.Name, output: cmp.Or(a.Output, "events")}
		case "gpio":
			act = newGPIOAction(a, e.opts.GPIO)
			if a.Timeout == 0 {
				pulse := a.Pulse
				if pulse == 0 {
					pulse = DefaultGPIOPulse
				}
				a.Timeout = pulse + DefaultActionTimeout
			}
		case "snapshot":
			qual := a.Quality
			if qual == 0 {
				qual = 85
			}
			in.quality = qual
			act = &snapshotAction{dir: e.snapshotDir(), log: e.evlog}
		default:
			return nil, fmt.Errorf("actions[%d].type: unknown action %q", i, a.Type)
		}
		r := newActionRunner(name, a, act, sl.c, in.log)
		if a.Type == "snapshot" {
			in.snapshot = r
		} else {
			in.actions = append(in.actions, r)
		}
	}
	return in, nil
}

// release frees what build acquired (model, action clients).
func (in *instance) release() {
	if in.det != nil {
		in.det.Close()
	}
	if in.gate != nil {
		in.gate.close()
	}
	for _, a := range in.actions {
		a.act.close()
	}
	if in.snapshot != nil {
		in.snapshot.act.close()
	}
}

// start runs the stages. prev, when not nil, is the instance being
// replaced: if its source is the same, its capture is taken over and its
// camera stays open.
func (in *instance) start(ctx context.Context, prev *instance) {
	in.started.Store(true)
	c := in.slot.c
	in.mb = newMailbox(in.target.Lossless(in.spec.Source), &c.dropped)
	if prev != nil && prev.cap != nil && prev.ownsCap && sameSource(prev.spec.Source, in.spec.Source) {
		in.cap, in.ownsCap, prev.ownsCap = prev.cap, true, false
	} else {
		in.cap = newCapture(in.spec.Source)
		in.ownsCap = true
	}
	counted := func(source.Frame) { c.in.Add(1); c.fpsIn.mark(time.Now()) }
	in.cap.counted.Store(&counted)
	onState := func(s source.State) {
		in.slot.src.Set(s)
		in.eng.bus.publishState(in.spec.Name, s)
		switch s.Phase {
		case source.PhaseBackoff:
			in.slot.srcLog.Fail(s.Reason, "retry", time.Until(s.Retry).Round(100*time.Millisecond))
		case source.PhaseStreaming, source.PhaseEnded:
			in.slot.srcLog.OK()
		}
	}
	in.cap.onState.Store(&onState)
	if in.spec.Motion != nil {
		in.gate = newMotionGate(in.spec.Motion)
	}

	in.actCtx, in.actStop = context.WithCancel(context.WithoutCancel(ctx))
	for _, a := range in.actions {
		in.actWG.Go(func() { a.run(in.actCtx) })
	}
	pctx, cancel := context.WithCancel(ctx)
	in.cancel = cancel
	in.wg.Go(func() {
		defer close(in.procDone)
		in.process(pctx)
	})
	in.wg.Go(func() { in.dispatch() })
	old := in.cap.mb.Swap(in.mb)
	if old != nil {
		old.close(in.cap.Recycle)
	}
	if prev == nil || in.cap != prev.cap {
		in.slot.src.Set(in.cap.state.Get())
		in.cap.start(context.WithoutCancel(ctx))
	}
}

func sameSource(a, b source.Spec) bool {
	return a.URL == b.URL && a.Width == b.Width && a.Height == b.Height && a.FPS == b.FPS && a.FourCC == b.FourCC &&
		a.Loop == b.Loop && a.Realtime == b.Realtime && a.Backoff == b.Backoff
}

// stop stops the stages: the process stage at once, the dispatcher after
// the queued events, the actions within grace; then releases everything.
// The capture is stopped unless the next instance took it over.
func (in *instance) stop(grace time.Duration) {
	if !in.started.Load() {
		in.release()
		return
	}
	in.cancel()
	<-in.procDone
	if in.ownsCap && in.cap.mb.Load() == in.mb {
		in.cap.stop()
		in.slot.src.Set(in.cap.state.Get())
	}
	in.mb.close(in.cap.Recycle)
	in.wg.Wait() // dispatch ends once events is drained
	done := make(chan struct{})
	go func() { in.actWG.Wait(); close(done) }()
	t := time.NewTimer(grace)
	select {
	case <-done:
		t.Stop()
	case <-t.C:
		in.actStop()
		<-done
	}
	in.actStop()
	in.release()
}

// process is the process stage: motion gate, detection, tracking, events,
// frames for viewers.
func (in *instance) process(ctx context.Context) {
	defer close(in.events)
	defer in.finishTracks()
	c := in.slot.c
	for {
		f, ok := in.mb.take(ctx)
		if !ok {
			return
		}
		if f.Wait != source.WaitBlocking {
			c.lat[StageCapture].add(f.Took)
		}
		if f.Wait != source.WaitNone {
			c.lat[StageFrameWait].add(f.Waited)
		}
		in.processFrame(f)
		in.cap.Recycle(f.Mat)
	}
}

// processFrame runs one frame through the process stage: detection,
// tracking, counters, the per-frame result, the viewers' frame, and the
// frame's events to the dispatcher.
func (in *instance) processFrame(f source.Frame) {
	objs, version, detected := in.detectFrame(f)
	var events []Event
	if detected {
		t0 := time.Now()
		events = in.tracker.update(f.Time, objs, f.Mat.Cols(), f.Mat.Rows())
		in.slot.c.lat[StageTrack].add(time.Since(t0))
	}
	now := in.counted(f, detected)
	in.last = source.Frame{Time: f.Time, Captured: f.Captured, Seq: f.Seq}
	if in.slot.results.Len() > 0 {
		in.slot.results.Publish(Result{Pipeline: in.spec.Name, Frame: f.Seq, Time: f.Time, Detected: detected,
			Objects: objs, Model: version, Processed: now})
	}
	in.offerView(f, objs, version, detected, now)
	in.emit(f, objs, version, events)
}

// detectFrame runs the model on f when the detect stage has one, the
// frame is due (maxFps, every) and the motion gate sees motion. It returns
// the detections, the version of the model that ran ("" when none did)
// and whether it detected; a failed detection is counted and logged
// (rate-limited). Without a model the motion gate still runs, for its
// counters.
func (in *instance) detectFrame(f source.Frame) (objs []Object, version string, detected bool) {
	c := in.slot.c
	if in.det == nil || !in.det.Ready() { // not ready: its model is still on its way
		if in.gate != nil {
			in.moving(f)
		}
		return nil, "", false
	}
	if !in.det.Due(f.Time) {
		c.skipRate.Add(1)
		return nil, "", false
	}
	if in.gate != nil && !in.moving(f) {
		return nil, "", false
	}
	t0 := time.Now()
	dets, version, err := in.det.Detect(f.Mat, f.Time)
	c.lat[StageDetect].add(time.Since(t0))
	in.version = version
	if err != nil {
		c.detErr.Add(1)
		if c.detErr.Load()%100 == 1 {
			in.log.Warn("detect failed", "err", err, "failures", c.detErr.Load())
		}
		return nil, version, false
	}
	objs = make([]Object, len(dets))
	for i, d := range dets {
		objs[i] = Object{Detection: d}
	}
	c.dets.Add(uint64(len(objs)))
	return objs, version, true
}

// moving runs the motion gate on f and counts a frame it stops.
func (in *instance) moving(f source.Frame) bool {
	c := in.slot.c
	t0 := time.Now()
	moving := in.gate.moving(f.Mat, f.Time)
	c.lat[StageMotion].add(time.Since(t0))
	if !moving {
		c.skipMotion.Add(1)
	}
	return moving
}

// counted counts f as processed and records its latencies; it returns
// the time it was done.
func (in *instance) counted(f source.Frame, detected bool) time.Time {
	c := in.slot.c
	now := time.Now()
	c.out.Add(1)
	c.fpsOut.mark(now)
	c.lat[StageCaptureToResult].add(now.Sub(f.Captured))
	if detected {
		c.lat[StageCaptureToDetection].add(now.Sub(f.Captured))
	}
	return now
}

// offerView hands viewers (when one is due a frame) a copy of f with its
// detections, or the confirmed tracks' last boxes on a frame not
// detected, to annotate and encode.
func (in *instance) offerView(f source.Frame, objs []Object, version string, detected bool, now time.Time) {
	if !in.slot.hub.watching(now) {
		return
	}
	drawn := objs
	if !detected {
		drawn = in.tracker.confirmedTracks()
	}
	text := in.spec.Name
	if in.det != nil {
		text += " " + version
	}
	in.slot.hub.offer(&watchJob{mat: f.Mat.Clone(), objs: drawn, zones: in.zones, text: text, frame: f.Seq, at: f.Time})
}

// emit fills in the frame's events that the pipeline emits, gives those
// the snapshot action takes the frame (encoded once), and queues them for
// the dispatcher.
func (in *instance) emit(f source.Frame, objs []Object, version string, events []Event) {
	var jpeg []byte
	for i := range events {
		e := &events[i]
		if !in.emits(e.Type) {
			continue
		}
		e.Pipeline, e.Time, e.Frame, e.Model, e.Captured = in.spec.Name, f.Time, f.Seq, version, f.Captured
		if in.wantsFrame(e) {
			if jpeg == nil {
				jpeg = in.snapshotJPEG(f.Mat, objs)
			}
			e.jpeg = jpeg
			if isTrackEvent(e.Type) {
				in.snapped[e.TrackID] = true
			}
		}
		if e.Type == TrackEnd {
			delete(in.snapped, e.TrackID)
		}
		in.queue(e)
	}
}

// wantsFrame reports whether e takes this frame as a snapshot: a raw
// event the snapshot action takes, or a tracked object's event the action
// takes whose frame holds its new best detection (or that has none yet).
func (in *instance) wantsFrame(e *Event) bool {
	if in.snapshot == nil || !in.snapshot.wants(e) || e.Type == TrackEnd {
		return false
	}
	return !isTrackEvent(e.Type) || e.best || !in.snapped[e.TrackID]
}

// queue hands e to the dispatcher without blocking (a full queue drops
// it, counted).
func (in *instance) queue(e *Event) {
	c := in.slot.c
	c.events.Add(1)
	select {
	case in.events <- e:
	default:
		c.evDropped.Add(1)
	}
}

// finishTracks ends the objects still in view when the process stage
// stops (the pipeline stops or is reloaded): each gets its track.end.
func (in *instance) finishTracks() {
	if in.tracker == nil {
		return
	}
	for _, ev := range in.tracker.finish() {
		e := &ev
		if !in.emits(e.Type) {
			continue
		}
		e.Pipeline, e.Time, e.Frame, e.Model, e.Captured = in.spec.Name, in.last.Time, in.last.Seq, in.version, in.last.Captured
		in.queue(e)
	}
}

func (in *instance) emits(ty string) bool { return matchAny(in.types, ty) }

// snapshotJPEG draws the frame's objects (with their track ids) and zones
// on a copy of the frame and encodes it.
func (in *instance) snapshotJPEG(m gocv.Mat, objs []Object) []byte {
	img := m.Clone()
	defer img.Close()
	annotate(&img, objs, in.zones, in.spec.Name+" "+time.Now().Format(time.DateTime))
	b, err := encodeJPEG(img, in.quality)
	if err != nil {
		in.log.Warn("snapshot encode", "err", err)
		return nil
	}
	in.slot.c.snapEncodes.Add(1)
	return b
}

// dispatch writes snapshots and the event log, tells subscribers and
// queues events to the actions, until the process stage closes events.
func (in *instance) dispatch() {
	defer func() {
		for _, a := range in.actions {
			close(a.queue)
		}
	}()
	ctx := in.actCtx
	for e := range in.events {
		if isTrackEvent(e.Type) {
			in.dispatchTrack(ctx, e)
		} else {
			var snapBytes int64
			if in.snapshot != nil && e.jpeg != nil {
				if in.snapshot.deliver(ctx, e) {
					snapBytes = int64(len(e.jpeg))
				}
			}
			if o := in.objects[e.TrackID]; o != nil && e.TrackID != 0 {
				e.EventID = o.id
			}
			if in.eng.evlog != nil && !in.spec.Events.NoLog {
				// A failure is logged by the event log, once per outage.
				if id, err := in.eng.evlog.Insert(ctx, e, snapBytes); err == nil {
					e.ID = id
				}
			}
			if o := in.objects[e.TrackID]; o != nil && e.TrackID != 0 && e.Snapshot == "" {
				e.Snapshot = o.snapshot
			}
		}
		e.jpeg = nil
		in.eng.bus.publish(*e)
		for _, a := range in.actions {
			if a.wants(e) {
				a.enqueue(e)
			}
		}
	}
}

// state fills s.State and s.Reason of a started instance from its source
// and its model.
func (in *instance) state(s *Stats, sl *slot) {
	src := s.Source
	switch src.Phase {
	case source.PhaseStreaming:
		s.State = StateRunning
		if in.det != nil && in.det.Waiting() {
			why := in.det.WaitReason()
			if why == "" {
				why = "no version is active yet"
			}
			s.State, s.Reason = StateWaiting, fmt.Sprintf("not detecting: model %q: %s", in.det.Model(), why)
		}
	case source.PhaseBackoff:
		s.State, s.Reason = StateBackoff, src.Reason
	case source.PhaseConnecting:
		s.State = StateStarting
		if src.Failures > 0 {
			s.State, s.Reason = StateBackoff, src.Reason
		}
	case source.PhaseEnded:
		s.State, s.Reason = StateEnded, "its source ended"
	default:
		s.State = StateStopped
	}
	if s.State == StateBackoff {
		// The source's state changes before the log hears of it: until
		// then, the failure is as old as the back-off.
		s.FailingSince = src.Since
		if failing, since, _ := sl.srcLog.State(); failing {
			s.FailingSince = since
		}
	}
}

// stats fills the parts of s this instance knows.
func (in *instance) stats(s *Stats) {
	if in.det != nil {
		s.Model, s.ModelVersion = in.det.Info()
	}
	if in.snapshot != nil {
		s.Actions = append(s.Actions, in.snapshot.stats())
	}
	for _, a := range in.actions {
		s.Actions = append(s.Actions, a.stats())
	}
}
