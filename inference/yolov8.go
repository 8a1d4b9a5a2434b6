package inference

import "fmt"

// yolov8 decodes Ultralytics YOLOv8/YOLO11 detection heads: [1, 4+C, N],
// channel-major; channels 0-3 are cx, cy, w, h in input pixels and the rest
// class scores (already sigmoid), no objectness. A transposed [1, N, 4+C]
// export is accepted too. Input: letterbox centred, pad 114, RGB / 255.
type yolov8 struct {
	classes    int
	anchors    int
	transposed bool // [1, N, 4+C]
}

func init() {
	register(KindYOLOv8, adapterKind{
		order: 20,
		build: newYOLOv8,
		match: func(m *modelInfo) bool {
			o, err := singleOutput(m, 3)
			if err != nil {
				return false
			}
			if m.meta["names"] != "" && m.meta["task"] != "classify" {
				return true // Ultralytics metadata
			}
			return o.dims[1] > 4 && o.dims[1] < o.dims[2] && o.dims[2] == int64(gridCells(m.inW, m.inH))
		},
	})
}

func newYOLOv8(m *modelInfo) (adapter, error) {
	o, err := singleOutput(m, 3)
	if err != nil {
		return nil, err
	}
	d1, d2 := o.dims[1], o.dims[2]
	if d1 <= 0 || d2 <= 0 {
		return nil, fmt.Errorf("output %v has dynamic dimensions", o)
	}
	a := &yolov8{}
	switch {
	case d1 > 4 && d1 < d2:
		a.classes, a.anchors = int(d1-4), int(d2)
	case d2 > 4 && d2 < d1:
		a.classes, a.anchors, a.transposed = int(d2-4), int(d1), true
	default:
		return nil, fmt.Errorf("want output [1, 4+classes, anchors], got %v", o)
	}
	return a, nil
}

func (a *yolov8) preprocess() Preprocess {
	return Preprocess{Fit: FitLetterboxCenter, RGB: true, Scale: 1.0 / 255, Pad: 114}
}

func (a *yolov8) numClasses() int { return a.classes }

func (a *yolov8) decode(outs []output, minScore float32, dst []Detection) ([]Detection, error) {
	n, c := a.anchors, a.classes
	data, err := checkSize(outs, n*(4+c))
	if err != nil {
		return dst, err
	}
	if a.transposed {
		for i := range n {
			row := data[i*(4+c) : (i+1)*(4+c)]
			cls, score := argmax(row[4:])
			if score >= minScore {
				dst = append(dst, Detection{Box: cxcywh(row[0], row[1], row[2], row[3]), ClassID: cls, Score: score})
			}
		}
		return dst, nil
	}
	// Channel-major: scan class planes sequentially for cache locality,
	// keeping the best class per anchor.
	best := make([]float32, n)
	bestIdx := make([]int32, n)
	copy(best, data[4*n:5*n])
	for k := 1; k < c; k++ {
		plane := data[(4+k)*n : (5+k)*n]
		for i, v := range plane {
			if v > best[i] {
				best[i], bestIdx[i] = v, int32(k)
			}
		}
	}
	for i := range n {
		if best[i] < minScore {
			continue
		}
		dst = append(dst, Detection{
			Box:     cxcywh(data[i], data[n+i], data[2*n+i], data[3*n+i]),
			ClassID: int(bestIdx[i]),
			Score:   best[i],
		})
	}
	return dst, nil
}

func cxcywh(cx, cy, w, h float32) Box {
	return Box{X1: cx - w/2, Y1: cy - h/2, X2: cx + w/2, Y2: cy + h/2}
}
