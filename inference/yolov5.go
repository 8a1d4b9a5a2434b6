package inference

import "fmt"

// yolov5 decodes anchor-based YOLOv5/YOLOv7 heads: [1, N, 5+C]; each row is
// cx, cy, w, h in input pixels, objectness and class scores (already
// sigmoid). Input: letterbox centred, pad 114, RGB / 255.
type yolov5 struct {
	classes int
	rows    int
}

func init() {
	register(KindYOLOv5, adapterKind{
		order: 30,
		build: newYOLOv5,
		match: func(m *modelInfo) bool {
			o, err := singleOutput(m, 3)
			return err == nil && o.dims[1] == int64(3*gridCells(m.inW, m.inH)) && o.dims[2] > 5
		},
	})
}

func newYOLOv5(m *modelInfo) (adapter, error) {
	o, err := singleOutput(m, 3)
	if err != nil {
		return nil, err
	}
	if o.dims[1] <= 0 || o.dims[2] <= 5 || o.dims[1] < o.dims[2] {
		return nil, fmt.Errorf("want output [1, rows, 5+classes], got %v", o)
	}
	return &yolov5{classes: int(o.dims[2]) - 5, rows: int(o.dims[1])}, nil
}

func (a *yolov5) preprocess() Preprocess {
	return Preprocess{Fit: FitLetterboxCenter, RGB: true, Scale: 1.0 / 255, Pad: 114}
}

func (a *yolov5) numClasses() int { return a.classes }

func (a *yolov5) decode(outs []output, minScore float32, dst []Detection) ([]Detection, error) {
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
		if score := obj * best; score >= minScore {
			dst = append(dst, Detection{Box: cxcywh(row[0], row[1], row[2], row[3]), ClassID: cls, Score: score})
		}
	}
	return dst, nil
}
