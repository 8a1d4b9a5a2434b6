package inference

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Kind names a model family: its pre-processing and output decoder.
type Kind string

// The kinds ledge knows. KindAuto picks one from the model.
const (
	KindAuto       Kind = "auto"
	KindYOLOX      Kind = "yolox"
	KindYOLOv8     Kind = "yolov8"
	KindYOLOv5     Kind = "yolov5"
	KindFastestDet Kind = "fastestdet"
	KindClassify   Kind = "classify"
)

// tensorInfo is one model input or output: its name and dimensions, with a
// dynamic batch dimension already fixed to 1 (other dynamic dims are < 0).
type tensorInfo struct {
	name string
	dims []int64
}

func (t tensorInfo) String() string { return fmt.Sprintf("%s%v", t.name, t.dims) }

// modelInfo is what an adapter constructor may inspect.
type modelInfo struct {
	input    tensorInfo
	outputs  []tensorInfo
	inW, inH int               // network input size, resolved
	meta     map[string]string // custom metadata (Ultralytics: names, imgsz, task, stride)
}

// output is one output tensor after a run.
type output struct {
	data []float32
	dims []int64
}

// adapter pre-processes for and decodes one model family.
type adapter interface {
	preprocess() Preprocess
	// numClasses is the number of classes the model scores.
	numClasses() int
	// decode appends to dst the candidates scoring at least minScore, boxes
	// in network-input pixels, before NMS. It must check outs against the
	// shapes it expects and fail, not panic, when they differ.
	decode(outs []output, minScore float32, dst []Detection) ([]Detection, error)
}

// adapterKind describes a registered kind.
type adapterKind struct {
	// build checks that the model fits the kind and returns its adapter.
	build func(m *modelInfo) (adapter, error)
	// match reports whether the model looks like this kind, for KindAuto.
	match func(m *modelInfo) bool
	// order ranks kinds when several match (lower first).
	order int
}

var kinds = map[Kind]adapterKind{}

// register adds a kind; a duplicate or nil registration is a programming
// error and panics.
func register(k Kind, a adapterKind) {
	if a.build == nil || a.match == nil {
		panic("inference: nil adapter for kind " + string(k))
	}
	if _, dup := kinds[k]; dup {
		panic("inference: kind registered twice: " + string(k))
	}
	kinds[k] = a
}

// Kinds lists the known kinds, sorted, without KindAuto.
func Kinds() []Kind {
	return slices.Sorted(maps.Keys(kinds))
}

// ParseKind validates a kind name; "" means auto.
func ParseKind(s string) (Kind, error) {
	k := Kind(strings.ToLower(strings.TrimSpace(s)))
	if k == "" || k == KindAuto {
		return KindAuto, nil
	}
	if _, ok := kinds[k]; ok {
		return k, nil
	}
	names := make([]string, 0, len(kinds)+1)
	names = append(names, string(KindAuto))
	for _, k := range Kinds() {
		names = append(names, string(k))
	}
	return "", fmt.Errorf("unknown model kind %q (known: %s)", s, strings.Join(names, ", "))
}

// buildAdapter returns the adapter for kind, choosing one when kind is auto.
func buildAdapter(kind Kind, m *modelInfo) (Kind, adapter, error) {
	if kind == KindAuto {
		var cands []Kind
		for k, a := range kinds {
			if a.match(m) {
				cands = append(cands, k)
			}
		}
		if len(cands) == 0 {
			return "", nil, fmt.Errorf("cannot tell the model kind from input %v and outputs %v: set kind to one of %v", m.input, m.outputs, Kinds())
		}
		slices.SortFunc(cands, func(a, b Kind) int { return kinds[a].order - kinds[b].order })
		kind = cands[0]
	}
	ak, ok := kinds[kind]
	if !ok {
		return "", nil, fmt.Errorf("unknown model kind %q", kind)
	}
	a, err := ak.build(m)
	if err != nil {
		return "", nil, fmt.Errorf("model does not fit kind %s: %w", kind, err)
	}
	return kind, a, nil
}

// gridCells is the number of cells over strides 8, 16 and 32 for an input
// of w x h: the row count of YOLOX and anchor-free YOLOv8 heads.
func gridCells(w, h int) int {
	n := 0
	for _, s := range []int{8, 16, 32} {
		n += (w / s) * (h / s)
	}
	return n
}

// checkOutputs verifies the number of outputs and returns the first.
func singleOutput(m *modelInfo, rank int) (tensorInfo, error) {
	if len(m.outputs) != 1 {
		return tensorInfo{}, fmt.Errorf("want 1 output, the model has %d (%v)", len(m.outputs), m.outputs)
	}
	o := m.outputs[0]
	if len(o.dims) != rank {
		return tensorInfo{}, fmt.Errorf("want a %d-D output, got %v", rank, o)
	}
	if o.dims[0] != 1 {
		return tensorInfo{}, fmt.Errorf("want batch 1 in output %v", o)
	}
	return o, nil
}

// checkSize verifies that a run produced the shape the adapter was built for.
func checkSize(outs []output, want int) ([]float32, error) {
	if len(outs) != 1 {
		return nil, fmt.Errorf("got %d outputs, want 1", len(outs))
	}
	if len(outs[0].data) != want {
		return nil, fmt.Errorf("output %v has %d values, want %d", outs[0].dims, len(outs[0].data), want)
	}
	return outs[0].data, nil
}
