package inference

import (
	"fmt"
	"math"
)

// fastestdet decodes FastestDet: one [1, 5+C, H, W] grid, channel-major.
// Channel 0 is objectness, 1-2 the x/y offsets in cells (tanh), 3-4 width
// and height as a fraction of the image (sigmoid), then class
// probabilities; score = obj^0.6 * class^0.4. Input: plain resize, BGR / 255.
type fastestdet struct {
	classes int
	gw, gh  int
	inW     int
	inH     int
}

func init() {
	register(KindFastestDet, adapterKind{
		order: 40,
		build: newFastestDet,
		match: func(m *modelInfo) bool {
			o, err := singleOutput(m, 4)
			return err == nil && o.dims[1] > 5 && o.dims[2] > 0 && o.dims[3] > 0
		},
	})
}

func newFastestDet(m *modelInfo) (adapter, error) {
	o, err := singleOutput(m, 4)
	if err != nil {
		return nil, err
	}
	if o.dims[1] <= 5 || o.dims[2] <= 0 || o.dims[3] <= 0 {
		return nil, fmt.Errorf("want output [1, 5+classes, gridH, gridW], got %v", o)
	}
	return &fastestdet{classes: int(o.dims[1]) - 5, gh: int(o.dims[2]), gw: int(o.dims[3]), inW: m.inW, inH: m.inH}, nil
}

func (a *fastestdet) preprocess() Preprocess {
	return Preprocess{Fit: FitStretch, RGB: false, Scale: 1.0 / 255}
}

func (a *fastestdet) numClasses() int { return a.classes }

func (a *fastestdet) decode(outs []output, minScore float32, dst []Detection) ([]Detection, error) {
	cells := a.gw * a.gh
	data, err := checkSize(outs, cells*(5+a.classes))
	if err != nil {
		return dst, err
	}
	// score <= obj^0.6, so a cell whose objectness is below minScore^(1/0.6)
	// cannot pass.
	minObj := float32(math.Pow(float64(max(minScore, 0)), 1/0.6))
	for i := range cells {
		obj := data[i]
		if obj < minObj || obj <= 0 {
			continue
		}
		cls, best := 0, float32(-1)
		for k := range a.classes {
			if v := data[(5+k)*cells+i]; v > best {
				best, cls = v, k
			}
		}
		if best <= 0 {
			continue
		}
		score := float32(math.Pow(float64(obj), 0.6) * math.Pow(float64(best), 0.4))
		if score < minScore {
			continue
		}
		gx, gy := float32(i%a.gw), float32(i/a.gw)
		cx := (gx + tanh(data[cells+i])) / float32(a.gw) * float32(a.inW)
		cy := (gy + tanh(data[2*cells+i])) / float32(a.gh) * float32(a.inH)
		w := sigmoid(data[3*cells+i]) * float32(a.inW)
		h := sigmoid(data[4*cells+i]) * float32(a.inH)
		dst = append(dst, Detection{Box: cxcywh(cx, cy, w, h), ClassID: cls, Score: score})
	}
	return dst, nil
}

func tanh(x float32) float32    { return float32(math.Tanh(float64(x))) }
func sigmoid(x float32) float32 { return float32(1 / (1 + math.Exp(-float64(x)))) }
