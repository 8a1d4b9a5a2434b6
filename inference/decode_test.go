package inference

import (
	"math"
	"testing"
)

// Hand-made output tensors, one per decoder, with the detections they must
// produce.

func approxBox(t *testing.T, got, want Box) {
	t.Helper()
	for _, d := range []float32{got.X1 - want.X1, got.Y1 - want.Y1, got.X2 - want.X2, got.Y2 - want.Y2} {
		if math.Abs(float64(d)) > 0.01 {
			t.Errorf("box %v, want %v", got, want)
			return
		}
	}
}

func TestDecodeYOLOX(t *testing.T) {
	m := &modelInfo{inW: 64, inH: 64, outputs: []tensorInfo{{name: "output", dims: []int64{1, 84, 7}}}}
	// 64x64: 8x8 + 4x4 + 2x2 = 84 rows, 2 classes.
	a, err := newYOLOX(m)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]float32, 84*7)
	// Row 9 is stride 8, cell (1, 1): centre (1.5, 1.5)*8 = 12, size e^0*8 = 8.
	copy(data[9*7:], []float32{0.5, 0.5, 0, 0, 0.9, 0.1, 0.8})
	// Row 64+5 is stride 16, cell (1, 1): offset 0 -> centre 16; w = e^1*16.
	copy(data[69*7:], []float32{0, 0, float32(math.Log(2)), 0, 0.6, 0.7, 0.2})
	// Row 80 is stride 32, cell (0, 0), below threshold.
	copy(data[80*7:], []float32{0, 0, 0, 0, 0.2, 0.9, 0.9})
	got, err := a.decode([]output{{data: data}}, 0.3, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("got %d detections, want 2: %v", len(got), got)
	}
	if got[0].ClassID != 1 || math.Abs(float64(got[0].Score-0.72)) > 1e-6 {
		t.Errorf("first: %+v", got[0])
	}
	approxBox(t, got[0].Box, Box{8, 8, 16, 16})
	if got[1].ClassID != 0 || math.Abs(float64(got[1].Score-0.42)) > 1e-6 {
		t.Errorf("second: %+v", got[1])
	}
	approxBox(t, got[1].Box, Box{0, 8, 32, 24})

	if _, err := a.decode([]output{{data: data[:10]}}, 0.3, nil); err == nil {
		t.Error("short output: want an error")
	}
}

func TestDecodeYOLOv8(t *testing.T) {
	// 8 anchors, 2 classes, channel-major [1, 6, 8].
	const n = 8
	m := &modelInfo{inW: 640, inH: 640, outputs: []tensorInfo{{name: "output0", dims: []int64{1, 6, n}}}}
	data := make([]float32, 6*n)
	set := func(anchor int, vals ...float32) {
		for c, v := range vals {
			data[c*n+anchor] = v
		}
	}
	set(1, 100, 200, 20, 40, 0.3, 0.9) // class 1 at 0.9
	set(2, 300, 300, 10, 10, 0.2, 0.4) // class 1 at 0.4
	set(5, 50, 50, 10, 10, 0.3, 0.1)   // below 0.35
	a, err := newYOLOv8(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := a.decode([]output{{data: data}}, 0.35, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ClassID != 1 || got[0].Score != 0.9 || got[1].ClassID != 1 || got[1].Score != 0.4 {
		t.Fatalf("got %v", got)
	}
	approxBox(t, got[0].Box, Box{90, 180, 110, 220})

	// The same tensor transposed: [1, 8, 6].
	mt := &modelInfo{inW: 640, inH: 640, outputs: []tensorInfo{{name: "output0", dims: []int64{1, n, 6}}}}
	tr := make([]float32, len(data))
	for c := range 6 {
		for i := range n {
			tr[i*6+c] = data[c*n+i]
		}
	}
	at, err := newYOLOv8(mt)
	if err != nil {
		t.Fatal(err)
	}
	got2, err := at.decode([]output{{data: tr}}, 0.35, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got2) != 2 || got2[0] != got[0] || got2[1] != got[1] {
		t.Fatalf("transposed: got %v, want %v", got2, got)
	}
}

func TestDecodeYOLOv5(t *testing.T) {
	m := &modelInfo{inW: 640, inH: 640, outputs: []tensorInfo{{name: "output", dims: []int64{1, 20, 7}}}}
	a, err := newYOLOv5(m)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]float32, 20*7)
	copy(data[3*7:], []float32{320, 320, 100, 50, 0.8, 0.25, 0.75})
	copy(data[4*7:], []float32{10, 10, 4, 4, 0.9, 0.1, 0.1}) // 0.09: below
	got, err := a.decode([]output{{data: data}}, 0.25, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ClassID != 1 || math.Abs(float64(got[0].Score-0.6)) > 1e-6 {
		t.Fatalf("got %v", got)
	}
	approxBox(t, got[0].Box, Box{270, 295, 370, 345})
}

func TestDecodeFastestDet(t *testing.T) {
	// 2x2 grid, 1 class, input 100x100 (stretch: input pixels).
	m := &modelInfo{inW: 100, inH: 100, outputs: []tensorInfo{{name: "734", dims: []int64{1, 6, 2, 2}}}}
	a, err := newFastestDet(m)
	if err != nil {
		t.Fatal(err)
	}
	cells := 4
	data := make([]float32, 6*cells)
	// Cell 3 = (1, 1): obj 0.9, offsets 0 -> centre at the cell corner
	// (1/2 * 100 = 50); w, h logits 0 -> 0.5 * 100.
	data[0*cells+3] = 0.9
	data[5*cells+3] = 0.8
	// Cell 0: obj 0.1: score 0.1^0.6 * 1 = 0.25 < 0.3.
	data[0*cells+0] = 0.1
	data[5*cells+0] = 1
	got, err := a.decode([]output{{data: data}}, 0.3, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("got %v", got)
	}
	want := float32(math.Pow(0.9, 0.6) * math.Pow(0.8, 0.4))
	if math.Abs(float64(got[0].Score-want)) > 1e-5 {
		t.Errorf("score %v, want %v", got[0].Score, want)
	}
	approxBox(t, got[0].Box, Box{25, 25, 75, 75})
}

func TestDecodeClassify(t *testing.T) {
	m := &modelInfo{inW: 224, inH: 224, outputs: []tensorInfo{{name: "logits", dims: []int64{1, 4}}}}
	a, err := newClassify(m)
	if err != nil {
		t.Fatal(err)
	}
	// Logits: softmax applies.
	got, err := a.decode([]output{{data: []float32{1, 3, 2, -5}}}, 0.1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ClassID != 1 || got[1].ClassID != 2 || got[0].Box != wholeInput {
		t.Fatalf("got %v", got)
	}
	if math.Abs(float64(got[0].Score)-0.6652) > 1e-3 {
		t.Errorf("softmax score %v", got[0].Score)
	}
	// Probabilities stay as they are.
	got, _ = a.decode([]output{{data: []float32{0.1, 0.2, 0.6, 0.1}}}, 0.15, nil)
	if len(got) != 2 || got[0].ClassID != 2 || got[0].Score != 0.6 || got[1].Score != 0.2 {
		t.Fatalf("probabilities: got %v", got)
	}
}

func TestAutoKind(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    modelInfo
		want Kind
	}{
		{"yolox", modelInfo{inW: 416, inH: 416, outputs: []tensorInfo{{dims: []int64{1, 3549, 85}}}}, KindYOLOX},
		{"yolov5", modelInfo{inW: 640, inH: 640, outputs: []tensorInfo{{dims: []int64{1, 25200, 85}}}}, KindYOLOv5},
		{"yolov8", modelInfo{inW: 640, inH: 640, outputs: []tensorInfo{{dims: []int64{1, 84, 8400}}}}, KindYOLOv8},
		{"yolov8 metadata", modelInfo{inW: 640, inH: 640, meta: map[string]string{"names": "{0: 'a'}"}, outputs: []tensorInfo{{dims: []int64{1, 5, 8400}}}}, KindYOLOv8},
		{"fastestdet", modelInfo{inW: 352, inH: 352, outputs: []tensorInfo{{dims: []int64{1, 85, 22, 22}}}}, KindFastestDet},
		{"classify", modelInfo{inW: 224, inH: 224, outputs: []tensorInfo{{dims: []int64{1, 1000}}}}, KindClassify},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.m.meta == nil {
				tc.m.meta = map[string]string{}
			}
			got, _, err := buildAdapter(KindAuto, &tc.m)
			if err != nil || got != tc.want {
				t.Errorf("got %s, %v; want %s", got, err, tc.want)
			}
		})
	}
	m := &modelInfo{inW: 416, inH: 416, meta: map[string]string{}, outputs: []tensorInfo{{dims: []int64{1, 7, 7, 7, 7}}}}
	if _, _, err := buildAdapter(KindAuto, m); err == nil {
		t.Error("5-D output: want an error")
	}
}

func TestParseKind(t *testing.T) {
	for in, want := range map[string]Kind{"": KindAuto, "auto": KindAuto, "YOLOX": KindYOLOX, " fastestdet ": KindFastestDet} {
		if got, err := ParseKind(in); err != nil || got != want {
			t.Errorf("ParseKind(%q) = %s, %v", in, got, err)
		}
	}
	if _, err := ParseKind("ssd"); err == nil {
		t.Error("ssd: want an error")
	}
}
