package detect

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gocv.io/x/gocv"

	"ledge/inference"
)

// Stage runs a pipeline's model on frames. The current model sits behind
// an atomic pointer; a committed swap stages the new one in next, and the
// process goroutine takes it up before its next frame, so the switch
// happens between two frames and the old model is released only once no
// detection of this stage uses it. Every result carries the version of
// the model that produced it.
type Stage struct {
	pool   *Pool
	spec   Spec
	layout Layout // the engine's default session layout
	cur    atomic.Pointer[loaded]
	next   atomic.Pointer[loaded]

	// res resolves the model name while the stage waits for its first
	// version (for WaitReason); nil otherwise.
	res Resolver
	// Used by the process goroutine only.
	params inference.Params
	minGap time.Duration // from maxFps
	every  int
	n      int
	last   time.Time
}

// loaded is a detector in use by a stage, with its version.
type loaded struct {
	e       *entry
	version string
}

// NewStage resolves d.Model (through res for a name) and loads (or
// shares) its detector from pool, waiting for the load until ctx ends.
// def is the engine's session layout, for what d leaves out. A model name
// the resolver knows but cannot serve yet (ErrModelNotReady) gives a stage
// without a model: it waits for a swap to bring one.
func NewStage(ctx context.Context, d Spec, def Layout, pool *Pool, res Resolver) (*Stage, error) {
	d.Classes = slices.Clone(d.Classes)
	s := &Stage{pool: pool, spec: d, layout: def, every: max(d.Every, 1),
		params: inference.Params{MinScore: float32(d.Threshold), IoU: float32(d.IoU)}}
	if d.MaxFPS > 0 {
		s.minGap = time.Duration(float64(time.Second) / d.MaxFPS)
	}
	m, err := s.spec.resolve(res)
	switch {
	case errors.Is(err, ErrModelNotReady) && !IsPath(d.Model):
		s.res = res
		return s, nil
	case err != nil:
		return nil, err
	}
	l, err := s.load(ctx, m, false)
	if err != nil {
		return nil, err
	}
	s.cur.Store(l)
	return s, nil
}

func (s *Stage) load(ctx context.Context, m Model, low bool) (*loaded, error) {
	e, err := s.pool.acquire(ctx, s.spec.key(m, s.layout), s.spec.label(m), low)
	if err != nil {
		return nil, err
	}
	return &loaded{e: e, version: m.Version}, nil
}

// Prepare loads m, the new version of the stage's model name, beside the
// model serving, and warms it: one inference on a blank frame in every
// session, its outputs decoded. It loads at low priority when the model
// runs one thread per session (ONNX Runtime then starts no thread pool
// that would keep the low priority after the swap), so the frames of the
// model serving keep the cores. Nothing switches until the Swap is
// committed. It returns nil when the stage already runs m.
func (s *Stage) Prepare(ctx context.Context, m Model) (*Swap, error) {
	m = s.spec.withKind(m)
	k := s.spec.key(m, s.layout)
	if cur := s.cur.Load(); cur != nil && cur.e.key == k && cur.version == m.Version {
		return nil, nil
	}
	l, err := s.load(ctx, m, k.threads == 1)
	if err != nil {
		return nil, err
	}
	if err := warm(ctx, l.e.det); err != nil {
		s.pool.release(l.e)
		return nil, fmt.Errorf("model %s does not serve: %w", s.spec.label(m), err)
	}
	return &Swap{s: s, l: l}, nil
}

// Swap is a model prepared for a stage and not serving yet. Exactly one of
// Commit and Abort is called, once.
type Swap struct {
	s *Stage
	l *loaded
}

// Commit stages the model: the stage's process goroutine takes it up
// before its next frame and releases the one it replaces. A model staged
// earlier and not taken up yet is released.
func (w *Swap) Commit() {
	if old := w.s.next.Swap(w.l); old != nil {
		w.s.pool.release(old.e)
	}
}

// Abort releases the prepared model; the stage keeps the one it runs.
func (w *Swap) Abort() { w.s.pool.release(w.l.e) }

// Version is the version of the prepared model.
func (w *Swap) Version() string { return w.l.version }

// takeUp makes a staged model current; the one it replaces is released in
// the background (closing a detector takes a moment the frame should not
// wait for). Called by the process goroutine between two frames.
func (s *Stage) takeUp() {
	n := s.next.Swap(nil)
	if n == nil {
		return
	}
	if old := s.cur.Swap(n); old != nil {
		s.pool.releaseLater(old.e)
	}
}

// Ready reports whether the stage has a model (it has none while its
// model name waits for its first version). Called by the process
// goroutine, which takes a staged model up here.
func (s *Stage) Ready() bool {
	s.takeUp()
	return s.cur.Load() != nil
}

// Waiting reports whether the stage still waits for its first model.
func (s *Stage) Waiting() bool { return s.cur.Load() == nil && s.next.Load() == nil }

// WaitReason says why the stage still waits for its first model, as the
// resolver says it now (a version downloading, failed, none active).
func (s *Stage) WaitReason() string {
	if s.res == nil {
		return ""
	}
	if _, err := s.spec.resolve(s.res); err != nil {
		msg := err.Error()
		if _, after, ok := strings.Cut(msg, fmt.Sprintf("model %q: ", s.spec.Model)); ok {
			msg = after // the name is said by the caller
		}
		return msg
	}
	return "" // resolvable now: its swap is on the way
}

// Due reports whether the frame at scene time t should be detected
// (maxFps, every); it advances the counters.
func (s *Stage) Due(t time.Time) bool {
	s.n++
	if s.every > 1 && (s.n-1)%s.every != 0 {
		return false
	}
	if s.minGap > 0 && !s.last.IsZero() && t.Sub(s.last) < s.minGap {
		return false
	}
	return true
}

// Detect runs the current model on img (the frame at scene time t) and
// returns the detections that pass the class filter, and the model's
// version.
func (s *Stage) Detect(img gocv.Mat, t time.Time) ([]Detection, string, error) {
	s.last = t
	s.takeUp()
	m := s.cur.Load()
	if m == nil {
		return nil, "", fmt.Errorf("%w: %q", ErrModelNotReady, s.spec.Model)
	}
	dets, err := m.e.det.Detect(img, s.params)
	if err != nil {
		return nil, m.version, err
	}
	if len(s.spec.Classes) > 0 {
		dets = slices.DeleteFunc(dets, func(d Detection) bool { return !slices.Contains(s.spec.Classes, d.Label) })
	}
	return dets, m.version, nil
}

// Info is the model's name (as the spec says) and version ("" while
// waiting for its model).
func (s *Stage) Info() (name, version string) {
	m := s.cur.Load()
	if m == nil {
		return s.spec.Model, ""
	}
	return s.spec.Model, m.version
}

// Model is the model name or file the stage runs, as its spec says.
func (s *Stage) Model() string { return s.spec.Model }

// Close releases the model, and one staged and not taken up.
func (s *Stage) Close() {
	if m := s.next.Swap(nil); m != nil {
		s.pool.release(m.e)
	}
	if m := s.cur.Swap(nil); m != nil {
		s.pool.release(m.e)
	}
}

// warm runs one inference on a blank frame in every open session of det at
// once, at low priority, so that no session meets its first frame cold
// after a swap, and checks that the outputs decode. (Sessions the detector
// makes later, when calls meet, warm themselves before they serve.) An inference cannot be
// interrupted: when ctx ended meanwhile, it returns ctx's error once they
// are done.
func warm(ctx context.Context, det *inference.Detector) error {
	n := max(det.OpenSessions(), 1)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { atLowPriority(func() { errs[i] = det.Warm() }) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return ctx.Err()
}
