package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gocv.io/x/gocv"

	"ledge/inference"
	"ledge/internal/fault"
)

// This file and detect_*.go are the only ones that use package inference.

// ModelResolver finds a model by name (the model store). The appliance
// provides it; without one, every name is unknown.
type ModelResolver interface {
	Resolve(name string) (ResolvedModel, error)
}

// ResolvedModel is what a model name stands for.
type ResolvedModel struct {
	Path    string   // the ONNX file
	Kind    string   // model family; "" or auto to detect
	Labels  []string // class names; nil for the model's own
	Version string   // shown with every result the model produces
	// InputWidth and InputHeight set the input size of a model whose
	// input is dynamic (0: from the model).
	InputWidth, InputHeight int
}

// ErrUnknownModel is returned (wrapped) for a model name nobody knows.
var ErrUnknownModel = fault.New(fault.NotFound, "unknown model")

// ErrModelNotReady is returned (wrapped) by a resolver for a model name it
// knows but cannot serve yet (its first version is downloading). A
// pipeline on such a name runs without detection until SwapModel brings
// the model in.
var ErrModelNotReady = fault.New(fault.Unavailable, "model not ready")

// detectorKey is what makes two detectors different.
type detectorKey struct {
	path     string
	kind     string
	labels   string
	sessions int
	threads  int
	inW, inH int
}

// detectorPool shares detectors across pipelines, reference-counted, and
// opens ONNX Runtime only when the first detector is needed. Safe for
// concurrent use.
type detectorPool struct {
	library       string
	providers     []string
	tensorRTCache string

	mu      sync.Mutex // guards rt and entries
	rt      *inference.Runtime
	entries map[detectorKey]*detEntry

	loads atomic.Uint64  // detectors loaded, ever
	bg    sync.WaitGroup // releases in the background
}

type detEntry struct {
	det  *inference.Detector
	refs int
}

func newDetectorPool(library string, providers []string, tensorRTCache string) *detectorPool {
	return &detectorPool{library: library, providers: providers, tensorRTCache: tensorRTCache, entries: map[detectorKey]*detEntry{}}
}

// acquire returns the shared detector for key, loading it if nobody holds
// it. Each acquire is paired with a release.
func (p *detectorPool) acquire(key detectorKey) (*inference.Detector, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e, ok := p.entries[key]; ok {
		e.refs++
		return e.det, nil
	}
	if p.rt == nil {
		rt, err := inference.Open(p.library)
		if err != nil {
			return nil, err
		}
		p.rt = rt
	}
	var labels []string
	if key.labels != "" {
		labels = strings.Split(key.labels, "\n")
	}
	kind, err := inference.ParseKind(key.kind)
	if err != nil {
		p.closeRuntimeIfIdle()
		return nil, err
	}
	det, err := p.rt.NewDetector(key.path, inference.Options{Kind: kind, Labels: labels,
		Sessions: key.sessions, Threads: key.threads, Providers: p.providers, InputWidth: key.inW, InputHeight: key.inH,
		TensorRTCache: p.tensorRTCache})
	if err != nil {
		p.closeRuntimeIfIdle()
		return nil, err
	}
	p.loads.Add(1)
	p.entries[key] = &detEntry{det: det, refs: 1}
	return det, nil
}

// releaseLater releases key in a goroutine the pool's wait waits for, at
// low priority: it runs right when the frames of the new model start.
func (p *detectorPool) releaseLater(key detectorKey) {
	p.bg.Go(func() { atLowPriority(func() { p.release(key) }) })
}

// wait waits for the releases started by releaseLater.
func (p *detectorPool) wait() { p.bg.Wait() }

// release drops one reference; the last one closes the detector, and the
// last detector closes ONNX Runtime.
func (p *detectorPool) release(key detectorKey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.entries[key]
	if !ok {
		return
	}
	if e.refs--; e.refs > 0 {
		return
	}
	delete(p.entries, key)
	e.det.Close()
	p.closeRuntimeIfIdle()
}

func (p *detectorPool) closeRuntimeIfIdle() {
	if len(p.entries) == 0 && p.rt != nil {
		p.rt.Close()
		p.rt = nil
	}
}

// loaded is the number of detectors open now.
func (p *detectorPool) loaded() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.entries)
}

// model is a detector in use by a detect stage, with its version.
type model struct {
	key     detectorKey
	det     *inference.Detector
	name    string // as the spec says
	version string
}

// detectStage runs the model on frames. The current model sits behind an
// atomic pointer; a swap stages the new one in next, and the process
// goroutine takes it up before its next frame, so the switch happens
// between two frames and the old model is released only once no detection
// of this stage uses it. Every result carries the version of the model
// that produced it. It is used by the process goroutine, except next
// (staged from anywhere) and cur (read by info).
type detectStage struct {
	pool    *detectorPool
	name    string // detect.model as the spec says
	cur     atomic.Pointer[model]
	next    atomic.Pointer[model]
	params  inference.Params
	classes []string
	minGap  time.Duration // from maxFps
	every   int
	n       int
	last    time.Time
}

// resolveModel turns detect.model into a file, kind, labels and version.
func resolveModel(d *DetectSpec, models ModelResolver) (ResolvedModel, error) {
	if IsModelPath(d.Model) {
		v, err := fileVersion(d.Model)
		if err != nil {
			return ResolvedModel{}, err
		}
		return ResolvedModel{Path: d.Model, Kind: d.Kind, Version: v}, nil
	}
	if models == nil {
		return ResolvedModel{}, fmt.Errorf("%w %q: no model store in this ledge yet; give a path to an .onnx file", ErrUnknownModel, d.Model)
	}
	m, err := models.Resolve(d.Model)
	if err != nil {
		return ResolvedModel{}, err
	}
	if d.Kind != "" && !strings.EqualFold(d.Kind, "auto") {
		m.Kind = d.Kind
	}
	return m, nil
}

// fileVersion names a model file's content: "sha256:" and 12 hex digits.
func fileVersion(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))[:12], nil
}

// newDetectStage resolves and loads (or shares) the model of d. A model
// name the resolver knows but cannot serve yet (ErrModelNotReady) gives a
// stage without a model: it waits for SwapModel.
func newDetectStage(d *DetectSpec, cfg DetectorConfig, pool *detectorPool, models ModelResolver) (*detectStage, error) {
	m, err := loadModel(d, cfg, pool, models)
	if err != nil && !(errors.Is(err, ErrModelNotReady) && !IsModelPath(d.Model)) {
		return nil, err
	}
	s := &detectStage{pool: pool, name: d.Model, classes: slices.Clone(d.Classes), every: max(d.Every, 1),
		params: inference.Params{MinScore: float32(d.Threshold), IoU: float32(d.IoU)}}
	if d.MaxFPS > 0 {
		s.minGap = time.Duration(float64(time.Second) / d.MaxFPS)
	}
	if m != nil {
		s.cur.Store(m)
	}
	return s, nil
}

// loadModel resolves d.Model and acquires its detector from the pool.
func loadModel(d *DetectSpec, cfg DetectorConfig, pool *detectorPool, models ModelResolver) (*model, error) {
	rm, err := resolveModel(d, models)
	if err != nil {
		return nil, err
	}
	key := detectorKey{path: rm.Path, kind: strings.ToLower(rm.Kind), labels: strings.Join(rm.Labels, "\n"),
		sessions: d.Sessions, threads: d.Threads, inW: rm.InputWidth, inH: rm.InputHeight}
	if key.sessions == 0 {
		key.sessions = cfg.Sessions
	}
	if key.sessions == 0 {
		key.sessions = runtime.NumCPU()
	}
	if key.threads == 0 {
		key.threads = max(cfg.Threads, 1)
	}
	det, err := pool.acquire(key)
	if err != nil {
		return nil, err
	}
	return &model{key: key, det: det, name: d.Model, version: rm.Version}, nil
}

// swap stages m as the model of the stage: the process goroutine takes it
// up before its next frame and releases the one it replaces. A model
// staged earlier and not taken up yet is released.
func (s *detectStage) swap(m *model) {
	if old := s.next.Swap(m); old != nil {
		s.pool.release(old.key)
	}
}

// takeUp makes a staged model current; the one it replaces is released in
// the background (closing a detector takes a moment the frame should not
// wait for). Called by the process goroutine between two frames.
func (s *detectStage) takeUp() {
	n := s.next.Swap(nil)
	if n == nil {
		return
	}
	if old := s.cur.Swap(n); old != nil {
		s.pool.releaseLater(old.key)
	}
}

// ready reports whether the stage has a model (it has none while its
// model name waits for its first version). Called by the process
// goroutine, which takes a staged model up here.
func (s *detectStage) ready() bool {
	s.takeUp()
	return s.cur.Load() != nil
}

// due reports whether frame at scene time t should be detected (maxFps,
// every); it advances the counters.
func (s *detectStage) due(t time.Time) bool {
	s.n++
	if s.every > 1 && (s.n-1)%s.every != 0 {
		return false
	}
	if s.minGap > 0 && !s.last.IsZero() && t.Sub(s.last) < s.minGap {
		return false
	}
	return true
}

// detect runs the current model on img and returns the objects that pass
// the class filter, and the model version.
func (s *detectStage) detect(img gocv.Mat, t time.Time) ([]Object, string, error) {
	s.last = t
	s.takeUp()
	m := s.cur.Load()
	if m == nil {
		return nil, "", fmt.Errorf("%w: %q", ErrModelNotReady, s.name)
	}
	dets, err := m.det.Detect(img, s.params)
	if err != nil {
		return nil, m.version, err
	}
	out := make([]Object, 0, len(dets))
	for _, d := range dets {
		if !matchAny(s.classes, d.Label) {
			continue
		}
		out = append(out, Object{Box: Box(d.Box), ClassID: d.ClassID, Label: d.Label, Score: d.Score})
	}
	return out, m.version, nil
}

// info is the model's name and version ("" while waiting for its model).
func (s *detectStage) info() (string, string) {
	m := s.cur.Load()
	if m == nil {
		return s.name, ""
	}
	return m.name, m.version
}

// close releases the model, and one staged and not taken up.
func (s *detectStage) close() {
	if m := s.next.Swap(nil); m != nil {
		s.pool.release(m.key)
	}
	if m := s.cur.Swap(nil); m != nil {
		s.pool.release(m.key)
	}
}

// warm runs one inference on a blank frame in every open session of det at
// once, at low priority, so that no session meets its first frame cold
// after a swap, and checks that the outputs decode. (Sessions the detector
// makes later, when calls meet, warm themselves before they serve.)
func warm(det *inference.Detector) error {
	n := max(det.OpenSessions(), 1)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { atLowPriority(func() { errs[i] = det.Warm() }) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// loadForSwap is loadModel for a swap: at low priority when the model runs
// one thread per session (ONNX Runtime then starts no thread pool that
// would keep the low priority after the swap).
func (e *Engine) loadForSwap(d *DetectSpec) (m *model, err error) {
	threads := d.Threads
	if threads == 0 {
		threads = max(e.cfg.Detector.Threads, 1)
	}
	if threads > 1 {
		return loadModel(d, e.cfg.Detector, e.pool, e.opts.Models)
	}
	atLowPriority(func() { m, err = loadModel(d, e.cfg.Detector, e.pool, e.opts.Models) })
	return m, err
}

// SwapModel resolves model name again for every running pipeline whose
// detect.model is name and, where it now stands for another file, kind or
// version, loads the new model, warms it (one inference on a blank frame)
// and swaps it in between two frames; the old one serves until then. A
// model that fails to load or warm is not swapped in: the pipelines keep
// the old one and the error says why. It returns the number of pipelines
// switched.
func (e *Engine) SwapModel(ctx context.Context, name string) (int, error) {
	e.applyMu.Lock()
	defer e.applyMu.Unlock()
	e.mu.Lock()
	var ins []*instance
	for _, in := range e.running {
		if in.det != nil && in.spec.Detect.Model == name {
			ins = append(ins, in)
		}
	}
	e.mu.Unlock()
	slices.SortFunc(ins, func(a, b *instance) int { return strings.Compare(a.spec.Name, b.spec.Name) })
	swapped := 0
	for _, in := range ins {
		cur := in.det.cur.Load()
		m, err := e.loadForSwap(in.spec.Detect)
		if err != nil {
			return swapped, fault.Wrap(fault.Invalid, fmt.Errorf("pipeline %s: model %q: %w", in.spec.Name, name, err))
		}
		if cur != nil && m.key == cur.key && m.version == cur.version {
			e.pool.release(m.key)
			continue
		}
		if err := warm(m.det); err != nil {
			e.pool.release(m.key)
			return swapped, fault.Wrap(fault.Invalid, fmt.Errorf("pipeline %s: model %q %s does not serve: %w", in.spec.Name, name, m.version, err))
		}
		in.det.swap(m)
		swapped++
		e.log.Info("model swapped", "pipeline", in.spec.Name, "model", name, "version", m.version)
	}
	return swapped, nil
}
