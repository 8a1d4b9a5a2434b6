package inference

import (
	"fmt"
	"math"
)

// classify decodes image classifiers: one [1, C] output of probabilities or
// logits (softmax is applied when the values are not already a
// distribution). Each of the top-k classes becomes a Detection whose box is
// the whole image. Input: plain resize, RGB / 255.
type classify struct {
	classes int
	topK    int
}

func init() {
	register(KindClassify, adapterKind{
		order: 50,
		build: newClassify,
		match: func(m *modelInfo) bool {
			_, err := singleOutput(m, 2)
			return err == nil
		},
	})
}

// DefaultTopK is how many classes a classifier reports.
const DefaultTopK = 5

func newClassify(m *modelInfo) (adapter, error) {
	o, err := singleOutput(m, 2)
	if err != nil {
		return nil, err
	}
	if o.dims[1] < 2 {
		return nil, fmt.Errorf("want output [1, classes], got %v", o)
	}
	return &classify{classes: int(o.dims[1]), topK: DefaultTopK}, nil
}

func (a *classify) preprocess() Preprocess {
	return Preprocess{Fit: FitStretch, RGB: true, Scale: 1.0 / 255}
}

func (a *classify) numClasses() int { return a.classes }

func (a *classify) decode(outs []output, minScore float32, dst []Detection) ([]Detection, error) {
	data, err := checkSize(outs, a.classes)
	if err != nil {
		return dst, err
	}
	probs := softmaxIfNeeded(data)
	// The caller's NMS sorts by score; keep the top k here with a simple
	// selection since k is small.
	taken := make([]bool, len(probs))
	for range min(a.topK, len(probs)) {
		best := -1
		for i, p := range probs {
			if !taken[i] && (best < 0 || p > probs[best]) {
				best = i
			}
		}
		taken[best] = true
		if probs[best] < minScore {
			break
		}
		dst = append(dst, Detection{ClassID: best, Score: probs[best], Box: wholeInput})
	}
	return dst, nil
}

// wholeInput is a sentinel box the detector replaces with the whole image.
var wholeInput = Box{X1: -1, Y1: -1, X2: -1, Y2: -1}

// softmaxIfNeeded returns v when it already is a probability distribution,
// else its softmax.
func softmaxIfNeeded(v []float32) []float32 {
	var sum float64
	dist := true
	for _, x := range v {
		if x < 0 || x > 1 {
			dist = false
		}
		sum += float64(x)
	}
	if dist && math.Abs(sum-1) < 1e-3 {
		return v
	}
	mx := float64(v[0])
	for _, x := range v {
		mx = math.Max(mx, float64(x))
	}
	out := make([]float32, len(v))
	sum = 0
	for i, x := range v {
		e := math.Exp(float64(x) - mx)
		out[i] = float32(e)
		sum += e
	}
	for i := range out {
		out[i] = float32(float64(out[i]) / sum)
	}
	return out
}
