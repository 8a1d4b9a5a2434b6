package inference

import "testing"

func TestNMS(t *testing.T) {
	a := Detection{Box: Box{0, 0, 10, 10}, ClassID: 0, Score: 0.9}
	aDup := Detection{Box: Box{1, 1, 11, 11}, ClassID: 0, Score: 0.8}   // IoU 0.68 with a
	aOther := Detection{Box: Box{1, 1, 11, 11}, ClassID: 1, Score: 0.7} // other class: kept
	far := Detection{Box: Box{50, 50, 60, 60}, ClassID: 0, Score: 0.95} // no overlap
	touch := Detection{Box: Box{5, 0, 15, 10}, ClassID: 0, Score: 0.85} // IoU 1/3 with a
	got := NMS([]Detection{aDup, a, aOther, far, touch}, 0.45, 0)
	want := []Detection{far, a, touch, aOther}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("[%d] got %v, want %v", i, got[i], want[i])
		}
	}
	if got := NMS([]Detection{a, far, touch}, 0.45, 2); len(got) != 2 || got[0] != far || got[1] != a {
		t.Errorf("maxKeep 2: got %v", got)
	}
	if got := NMS(nil, 0.45, 0); len(got) != 0 {
		t.Errorf("empty: got %v", got)
	}
}

func TestIoU(t *testing.T) {
	for _, tc := range []struct {
		a, b Box
		want float32
	}{
		{Box{0, 0, 10, 10}, Box{0, 0, 10, 10}, 1},
		{Box{0, 0, 10, 10}, Box{10, 0, 20, 10}, 0},
		{Box{0, 0, 10, 10}, Box{5, 0, 15, 10}, 1.0 / 3},
		{Box{0, 0, 0, 0}, Box{0, 0, 0, 0}, 0},
	} {
		if got := tc.a.IoU(tc.b); got < tc.want-1e-6 || got > tc.want+1e-6 {
			t.Errorf("IoU(%v, %v) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}
