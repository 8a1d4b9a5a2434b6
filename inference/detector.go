package inference

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
	"gocv.io/x/gocv"
)

// ErrClosed is returned by Detect after Close.
var ErrClosed = errors.New("detector closed")

// Defaults for Options and Params left zero.
const (
	DefaultMinScore      = 0.25
	DefaultIoU           = 0.45
	DefaultMaxDetections = 300
)

// Options configure a Detector. The zero value works for a model whose kind
// can be told from its shapes.
type Options struct {
	Kind   Kind     // "" or KindAuto: picked from the model
	Labels []string // class names; else the model metadata, else COCO-80 for 80 classes
	// InputWidth and InputHeight set the network input size of a model whose
	// input dimensions are dynamic (else the metadata imgsz, else an error).
	InputWidth, InputHeight int
	// Sessions is the most ONNX Runtime sessions that serve concurrent
	// Detect calls (default 1). The first is made with the detector, the
	// others only when concurrent calls find every session busy: each
	// session holds its own copy of the weights and its own memory arena
	// (tens of MiB for YOLOX-nano), which a model used by one pipeline at a
	// time never needs.
	Sessions int
	// Threads is the intra-op thread count of each session. 0 means all
	// cores for a single session and 1 per session for several.
	Threads int
	// Providers lists execution providers by preference: "cpu" (default),
	// "cuda", "tensorrt", or another name ONNX Runtime knows. A provider the
	// library was not built with is an error.
	Providers []string
	// NoSpin turns off intra-op thread spinning (less CPU when idle between
	// frames, a little more latency).
	NoSpin bool
	// Name names the model in errors (default: its path), e.g. the name
	// and version of a model from a store, whose file name means nothing
	// to the operator.
	Name string
	// TensorRTCache is the directory where the TensorRT provider keeps the
	// engines it builds and its timing cache, so that a later start loads
	// them instead of building again (minutes on a Jetson). Empty: no
	// cache. Used only with the "tensorrt" provider.
	TensorRTCache string
}

// Params tune one Detect call; zero fields take the defaults.
type Params struct {
	MinScore      float32 // drop detections scoring below (default 0.25)
	IoU           float32 // NMS overlap threshold (default 0.45)
	MaxDetections int     // keep at most this many (default 300)
}

// Info describes a loaded model.
type Info struct {
	Path        string   `json:"path"`
	Kind        Kind     `json:"kind"`
	Input       string   `json:"input"`
	Outputs     []string `json:"outputs"`
	InputWidth  int      `json:"inputWidth"`
	InputHeight int      `json:"inputHeight"`
	Classes     int      `json:"classes"`
	// LabelSource says where labels came from: "options", "metadata",
	// "coco80" or "generated".
	LabelSource string `json:"labelSource"`
	Sessions    int    `json:"sessions"` // at most; see [Detector.OpenSessions]
	Threads     int    `json:"threads"`
}

// Detector runs one model. It is safe for concurrent use; see the package
// documentation for how calls share its sessions.
type Detector struct {
	info    Info
	adapter adapter
	labels  []string
	// What more sessions are made from.
	model *modelInfo
	opts  Options

	slots chan *slot    // idle sessions (capacity: info.Sessions)
	done  chan struct{} // closed by Close
	grow  sync.WaitGroup
	once  sync.Once

	mu      sync.Mutex // guards the fields below
	all     []*slot
	growing bool  // a session is being made
	growErr error // making one failed: no more tries
}

// slot is one session with its own tensors and scratch space; it is used by
// one Detect call at a time.
type slot struct {
	sess    *ort.DynamicAdvancedSession
	input   *ort.Tensor[float32]
	inputs  []ort.Value
	outputs []ort.Value // pre-allocated
	outs    []output
	fill    *filler
	cands   []Detection
}

// NewDetector loads the model at path.
func (r *Runtime) NewDetector(path string, o Options) (*Detector, error) {
	d, err := r.newDetector(path, o)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", cmp.Or(o.Name, path), err)
	}
	return d, nil
}

func (r *Runtime) newDetector(path string, o Options) (*Detector, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	kind, err := ParseKind(string(o.Kind))
	if err != nil {
		return nil, err
	}
	ins, outs, err := ort.GetInputOutputInfo(path)
	if err != nil {
		return nil, fmt.Errorf("not a readable ONNX model: %w", err)
	}
	m := &modelInfo{meta: readMetadata(path)}
	if err := m.setInput(ins, o); err != nil {
		return nil, err
	}
	for _, out := range outs {
		if out.OrtValueType != ort.ONNXTypeTensor || out.DataType != ort.TensorElementDataTypeFloat {
			return nil, fmt.Errorf("output %q is %s, want a float32 tensor", out.Name, out.DataType)
		}
		m.outputs = append(m.outputs, tensorInfo{name: out.Name, dims: fixBatch(out.Dimensions)})
	}

	sessions := max(o.Sessions, 1)
	threads := o.Threads
	if threads <= 0 {
		threads = 1
		if sessions == 1 {
			threads = runtime.NumCPU()
		}
	}
	d := &Detector{
		model: m,
		opts:  o,
		slots: make(chan *slot, sessions),
		done:  make(chan struct{}),
	}
	first, err := newSession(path, m, o, threads)
	if err != nil {
		return nil, err
	}
	// Dynamic output dimensions are learnt from one run on a blank input.
	if dynamic(m.outputs) {
		if err := first.probe(m); err != nil {
			first.sess.Destroy()
			return nil, err
		}
	}
	kind, a, err := buildAdapter(kind, m)
	if err != nil {
		first.sess.Destroy()
		return nil, err
	}
	d.adapter = a
	d.info = Info{
		Path: path, Kind: kind, Input: m.input.String(), InputWidth: m.inW, InputHeight: m.inH,
		Classes: a.numClasses(), Sessions: sessions, Threads: threads,
	}
	for _, out := range m.outputs {
		d.info.Outputs = append(d.info.Outputs, out.String())
	}
	if d.labels, d.info.LabelSource, err = chooseLabels(o.Labels, m.meta, a.numClasses()); err != nil {
		first.sess.Destroy()
		return nil, err
	}
	if err := first.allocate(m, a.preprocess()); err != nil {
		first.destroy()
		return nil, err
	}
	d.all = append(d.all, first)
	d.slots <- first
	return d, nil
}

// OpenSessions is the number of sessions made so far (at most
// Info().Sessions).
func (d *Detector) OpenSessions() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.all)
}

// growLocked starts making one more session in the background, if the pool
// may grow and none is being made. The new session runs once on a blank
// input before it joins, so no call meets it cold. d.mu must be held.
func (d *Detector) growLocked() {
	if d.growing || d.growErr != nil || len(d.all) >= d.info.Sessions {
		return
	}
	select {
	case <-d.done:
		return
	default:
	}
	d.growing = true
	d.grow.Go(func() {
		s, err := newSession(d.info.Path, d.model, d.opts, d.info.Threads)
		if err == nil {
			if err = s.allocate(d.model, d.adapter.preprocess()); err == nil {
				err = s.sess.Run(s.inputs, s.outputs)
			}
			if err != nil {
				s.destroy()
			}
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		d.growing = false
		if err != nil {
			d.growErr = err
			return
		}
		select {
		case <-d.done:
			s.destroy()
			return
		default:
		}
		d.all = append(d.all, s)
		d.slots <- s // never blocks: the channel holds every session
	})
}

func (m *modelInfo) setInput(ins []ort.InputOutputInfo, o Options) error {
	if len(ins) != 1 {
		return fmt.Errorf("want 1 input, the model has %d", len(ins))
	}
	in := ins[0]
	if in.OrtValueType != ort.ONNXTypeTensor || in.DataType != ort.TensorElementDataTypeFloat {
		return fmt.Errorf("input %q is %s, want a float32 tensor", in.Name, in.DataType)
	}
	dims := fixBatch(in.Dimensions)
	if len(dims) != 4 || dims[0] != 1 || dims[1] != 3 {
		return fmt.Errorf("input %q%v: want [1, 3, height, width] (NCHW, 3 channels)", in.Name, in.Dimensions)
	}
	h, w := int(dims[2]), int(dims[3])
	if h <= 0 || w <= 0 {
		switch {
		case o.InputWidth > 0 && o.InputHeight > 0:
			w, h = o.InputWidth, o.InputHeight
		case m.meta["imgsz"] != "":
			var err error
			if w, h, err = parseImgsz(m.meta["imgsz"]); err != nil {
				return err
			}
		default:
			return fmt.Errorf("input %q%v has a dynamic size: set the input width and height", in.Name, in.Dimensions)
		}
		dims[2], dims[3] = int64(h), int64(w)
	}
	if h < 32 || w < 32 {
		return fmt.Errorf("input %q%v is too small", in.Name, dims)
	}
	m.input = tensorInfo{name: in.Name, dims: dims}
	m.inW, m.inH = w, h
	return nil
}

// parseImgsz reads Ultralytics' imgsz metadata: "[640, 640]" (h, w) or "640".
func parseImgsz(s string) (w, h int, err error) {
	parts := strings.Split(strings.Trim(strings.TrimSpace(s), "[]()"), ",")
	var v []int
	for _, p := range parts {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n <= 0 || n > 8192 {
			return 0, 0, fmt.Errorf("metadata imgsz %q: want [height, width]", s)
		}
		v = append(v, n)
	}
	switch len(v) {
	case 1:
		return v[0], v[0], nil
	case 2:
		return v[1], v[0], nil
	}
	return 0, 0, fmt.Errorf("metadata imgsz %q: want [height, width]", s)
}

func fixBatch(dims ort.Shape) []int64 {
	out := append([]int64(nil), dims...)
	if len(out) > 0 && out[0] <= 0 {
		out[0] = 1
	}
	return out
}

func dynamic(ts []tensorInfo) bool {
	for _, t := range ts {
		for _, d := range t.dims {
			if d <= 0 {
				return true
			}
		}
	}
	return false
}

func readMetadata(path string) map[string]string {
	meta := map[string]string{}
	md, err := ort.GetModelMetadata(path)
	if err != nil {
		return meta
	}
	defer md.Destroy()
	keys, err := md.GetCustomMetadataMapKeys()
	if err != nil {
		return meta
	}
	for _, k := range keys {
		if v, ok, err := md.LookupCustomMetadataMap(k); err == nil && ok {
			meta[k] = v
		}
	}
	return meta
}

func chooseLabels(given []string, meta map[string]string, classes int) ([]string, string, error) {
	if len(given) > 0 {
		if len(given) != classes {
			return nil, "", fmt.Errorf("labels: %d names for a model with %d classes", len(given), classes)
		}
		return given, "options", nil
	}
	if s := meta["names"]; s != "" {
		names, err := ParseNames(s)
		if err == nil && len(names) == classes {
			return names, "metadata", nil
		}
	}
	if classes == len(coco80) {
		return COCO80(), "coco80", nil
	}
	out := make([]string, classes)
	for i := range out {
		out[i] = "class" + strconv.Itoa(i)
	}
	return out, "generated", nil
}

func newSession(path string, m *modelInfo, o Options, threads int) (*slot, error) {
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("session options: %w", err)
	}
	defer so.Destroy()
	if err := so.SetIntraOpNumThreads(threads); err != nil {
		return nil, fmt.Errorf("intra-op threads %d: %w", threads, err)
	}
	if err := so.SetInterOpNumThreads(1); err != nil {
		return nil, fmt.Errorf("inter-op threads: %w", err)
	}
	if o.NoSpin {
		if err := so.AddSessionConfigEntry("session.intra_op.allow_spinning", "0"); err != nil {
			return nil, fmt.Errorf("spinning: %w", err)
		}
	}
	for _, p := range o.Providers {
		if err := appendProvider(so, p, o); err != nil {
			return nil, err
		}
	}
	names := make([]string, len(m.outputs))
	for i, out := range m.outputs {
		names[i] = out.name
	}
	sess, err := ort.NewDynamicAdvancedSession(path, []string{m.input.name}, names, so)
	if err != nil {
		return nil, fmt.Errorf("create session: %w", err)
	}
	return &slot{sess: sess}, nil
}

func appendProvider(so *ort.SessionOptions, name string, o Options) error {
	var err error
	switch strings.ToLower(name) {
	case "", "cpu":
		return nil
	case "cuda":
		var po *ort.CUDAProviderOptions
		if po, err = ort.NewCUDAProviderOptions(); err == nil {
			defer po.Destroy()
			err = so.AppendExecutionProviderCUDA(po)
		}
	case "tensorrt":
		var po *ort.TensorRTProviderOptions
		if po, err = ort.NewTensorRTProviderOptions(); err == nil {
			defer po.Destroy()
			if o.TensorRTCache != "" {
				err = po.Update(tensorRTCacheOptions(o.TensorRTCache))
			}
			if err == nil {
				err = so.AppendExecutionProviderTensorRT(po)
			}
			if err == nil && o.TensorRTCache != "" {
				// TensorRT writes engines there but does not make it.
				if err := os.MkdirAll(o.TensorRTCache, 0o750); err != nil {
					return fmt.Errorf("tensorrt engine cache: %w", err)
				}
			}
		}
	default:
		err = so.AppendExecutionProvider(name, nil)
	}
	if err != nil {
		return fmt.Errorf("execution provider %q is not available in this ONNX Runtime library (a CPU build?): "+
			"point inference.library at a build that has it: %w", name, err)
	}
	return nil
}

// tensorRTCacheOptions are the TensorRT provider options (ONNX Runtime's
// trt_* keys) that keep built engines and timing data in dir.
func tensorRTCacheOptions(dir string) map[string]string {
	return map[string]string{
		"trt_engine_cache_enable": "1",
		"trt_engine_cache_path":   dir,
		"trt_timing_cache_enable": "1",
		"trt_timing_cache_path":   dir,
	}
}

// probe runs the session once on a zero input to learn dynamic output
// dimensions.
func (s *slot) probe(m *modelInfo) error {
	in, err := ort.NewEmptyTensor[float32](ort.NewShape(m.input.dims...))
	if err != nil {
		return fmt.Errorf("input tensor: %w", err)
	}
	defer in.Destroy()
	outs := make([]ort.Value, len(m.outputs))
	if err := s.sess.Run([]ort.Value{in}, outs); err != nil {
		return fmt.Errorf("probe run: %w", err)
	}
	for i, v := range outs {
		m.outputs[i].dims = append([]int64(nil), v.GetShape()...)
		v.Destroy()
	}
	return nil
}

// allocate creates the slot's tensors and scratch image.
func (s *slot) allocate(m *modelInfo, p Preprocess) error {
	var err error
	if s.input, err = ort.NewEmptyTensor[float32](ort.NewShape(m.input.dims...)); err != nil {
		return fmt.Errorf("input tensor: %w", err)
	}
	s.inputs = []ort.Value{s.input}
	for _, o := range m.outputs {
		t, err := ort.NewEmptyTensor[float32](ort.NewShape(o.dims...))
		if err != nil {
			return fmt.Errorf("output tensor %v: %w", o, err)
		}
		s.outputs = append(s.outputs, t)
		s.outs = append(s.outs, output{data: t.GetData(), dims: o.dims})
	}
	s.fill = newFiller(p, m.inW, m.inH)
	return nil
}

func (s *slot) destroy() {
	if s.fill != nil {
		s.fill.close()
	}
	for _, v := range s.outputs {
		v.Destroy()
	}
	if s.input != nil {
		s.input.Destroy()
	}
	s.sess.Destroy()
}

// Info describes the model and how it is run.
func (d *Detector) Info() Info { return d.info }

// Kind is the adapter in use (the one chosen when the options said auto).
func (d *Detector) Kind() Kind { return d.info.Kind }

// Labels are the class names, index = class id. The slice must not be
// modified.
func (d *Detector) Labels() []string { return d.labels }

// acquire takes an idle session, or fails once the detector is closed.
// When every session is busy it starts making another (up to
// Info().Sessions) and takes whichever is free first.
func (d *Detector) acquire() (*slot, error) {
	select {
	case <-d.done:
		return nil, ErrClosed
	case s := <-d.slots:
		return d.taken(s)
	default:
	}
	d.mu.Lock()
	d.growLocked()
	d.mu.Unlock()
	select {
	case <-d.done:
		return nil, ErrClosed
	case s := <-d.slots:
		return d.taken(s)
	}
}

// taken returns s, or puts it back and fails when the detector was closed
// meanwhile.
func (d *Detector) taken(s *slot) (*slot, error) {
	select {
	case <-d.done:
		d.slots <- s
		return nil, ErrClosed
	default:
		return s, nil
	}
}

// Detect runs the model on img, an 8-bit BGR (or gray, or BGRA) image, and
// returns the detections in img's pixel coordinates, best first.
func (d *Detector) Detect(img gocv.Mat, p Params) ([]Detection, error) {
	s, err := d.acquire()
	if err != nil {
		return nil, err
	}
	defer func() { d.slots <- s }()
	g, err := s.fill.fill(img, s.input.GetData())
	if err != nil {
		return nil, err
	}
	if err := s.sess.Run(s.inputs, s.outputs); err != nil {
		return nil, fmt.Errorf("run model: %w", err)
	}
	return d.postprocess(s, g, p)
}

// postprocess decodes the slot's outputs into detections in source pixels.
func (d *Detector) postprocess(s *slot, g Geometry, p Params) ([]Detection, error) {
	if p.MinScore <= 0 {
		p.MinScore = DefaultMinScore
	}
	if p.IoU <= 0 {
		p.IoU = DefaultIoU
	}
	if p.MaxDetections <= 0 {
		p.MaxDetections = DefaultMaxDetections
	}
	cands, err := d.adapter.decode(s.outs, p.MinScore, s.cands[:0])
	s.cands = cands[:0]
	if err != nil {
		return nil, fmt.Errorf("decode %s output: %w", d.info.Kind, err)
	}
	kept := cands[:0]
	for _, c := range cands {
		if c.Box == wholeInput {
			c.Box = Box{X2: float32(g.SrcW), Y2: float32(g.SrcH)}
		} else {
			c.Box = g.ToSource(c.Box)
		}
		if c.Box.Area() <= 0 {
			continue
		}
		kept = append(kept, c)
	}
	kept = NMS(kept, p.IoU, p.MaxDetections)
	out := make([]Detection, len(kept))
	for i, c := range kept {
		c.Label = d.labels[c.ClassID]
		out[i] = c
	}
	return out, nil
}

// Warm runs the model once on a blank frame, checking that its outputs
// decode: a model that loads but cannot serve fails here.
func (d *Detector) Warm() error {
	blank := gocv.NewMatWithSize(d.info.InputHeight, d.info.InputWidth, gocv.MatTypeCV8UC3)
	defer blank.Close()
	_, err := d.Detect(blank, Params{})
	return err
}

// Close waits for running Detect calls and releases the sessions. Detect
// calls after Close return ErrClosed.
func (d *Detector) Close() error {
	d.once.Do(func() {
		d.mu.Lock()
		close(d.done) // under mu: no session is started after it
		d.mu.Unlock()
		d.grow.Wait() // one being made is dropped
		for range d.all {
			s := <-d.slots
			s.destroy()
		}
	})
	return nil
}
