package inference

import (
	"fmt"
	"math"
)

// yolox decodes YOLOX heads: [1, N, 5+C] with N the cells of strides 8, 16,
// 32; each row is x, y offsets, log w, log h (in cells), objectness, class
// scores (already sigmoid). Input: letterbox top-left, pad 114, BGR 0-255.
type yolox struct {
	classes int
	rows    int
	// grid[i] is the cell x, cell y and stride of row i.
	grid [][3]float32
}

func init() {
	register(KindYOLOX, adapterKind{
		order: 10,
		build: newYOLOX,
		match: func(m *modelInfo) bool {
			o, err := singleOutput(m, 3)
			return err == nil && o.dims[1] == int64(gridCells(m.inW, m.inH)) && o.dims[2] > 5 &&
				m.meta["names"] == "" // Ultralytics exports carry names
		},
	})
}

func newYOLOX(m *modelInfo) (adapter, error) {
	o, err := singleOutput(m, 3)
	if err != nil {
		return nil, err
	}
	rows := gridCells(m.inW, m.inH)
	if o.dims[1] != int64(rows) || o.dims[2] <= 5 {
		return nil, fmt.Errorf("want output [1, %d, 5+classes] for input %dx%d, got %v", rows, m.inW, m.inH, o)
	}
	a := &yolox{classes: int(o.dims[2]) - 5, rows: rows}
	for _, s := range []int{8, 16, 32} {
		gw, gh := m.inW/s, m.inH/s
		for y := range gh {
			for x := range gw {
				a.grid = append(a.grid, [3]float32{float32(x), float32(y), float32(s)})
			}
		}
	}
	return a, nil
}

func (a *yolox) preprocess() Preprocess {
	return Preprocess{Fit: FitLetterboxTopLeft, RGB: false, Scale: 1, Pad: 114}
}

func (a *yolox) numClasses() int { return a.classes }

func (a *yolox) decode(outs []output, minScore float32, dst []Detection) ([]Detection, error) {
	stride := 5 + a.classes
	data, err := checkSize(outs, a.rows*stride)
	if err != nil {
		return dst, err
	}
	for i := range a.rows {
		row := data[i*stride : (i+1)*stride]
		obj := row[4]
		if obj < minScore {
			continue
		}
		cls, best := argmax(row[5:])
		score := obj * best
		if score < minScore {
			continue
		}
		g := a.grid[i]
		cx, cy := (row[0]+g[0])*g[2], (row[1]+g[1])*g[2]
		w := float32(math.Exp(float64(row[2]))) * g[2]
		h := float32(math.Exp(float64(row[3]))) * g[2]
		dst = append(dst, Detection{
			Box:     Box{X1: cx - w/2, Y1: cy - h/2, X2: cx + w/2, Y2: cy + h/2},
			ClassID: cls,
			Score:   score,
		})
	}
	return dst, nil
}

// argmax returns the index and value of the largest element.
func argmax(v []float32) (int, float32) {
	best, idx := float32(math.Inf(-1)), 0
	for i, x := range v {
		if x > best {
			best, idx = x, i
		}
	}
	return idx, best
}
