package inference

import (
	"math"
	"testing"
)

func TestGeometry(t *testing.T) {
	for _, tc := range []struct {
		name       string
		fit        Fit
		srcW, srcH int
		inW, inH   int
		want       Geometry
	}{
		{"portrait top-left", FitLetterboxTopLeft, 810, 1080, 416, 416,
			Geometry{SrcW: 810, SrcH: 1080, InW: 416, InH: 416, ScaleX: 416.0 / 1080, ScaleY: 416.0 / 1080, ResizedW: 312, ResizedH: 416}},
		{"landscape centre", FitLetterboxCenter, 1280, 720, 640, 640,
			Geometry{SrcW: 1280, SrcH: 720, InW: 640, InH: 640, ScaleX: 0.5, ScaleY: 0.5, ResizedW: 640, ResizedH: 360, PadY: 140}},
		{"stretch", FitStretch, 1280, 720, 352, 352,
			Geometry{SrcW: 1280, SrcH: 720, InW: 352, InH: 352, ScaleX: 352.0 / 1280, ScaleY: 352.0 / 720, ResizedW: 352, ResizedH: 352}},
		{"upscale", FitLetterboxCenter, 100, 50, 416, 416,
			Geometry{SrcW: 100, SrcH: 50, InW: 416, InH: 416, ScaleX: 4.16, ScaleY: 4.16, ResizedW: 416, ResizedH: 208, PadY: 104}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := NewGeometry(tc.fit, tc.srcW, tc.srcH, tc.inW, tc.inH)
			if got != tc.want {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// TestGeometryRoundTrip maps boxes to the network input and back for each
// fit and several image shapes.
func TestGeometryRoundTrip(t *testing.T) {
	boxes := []Box{{0, 0, 10, 10}, {50, 60, 700, 400}, {1, 2, 3, 4}}
	for _, fit := range []Fit{FitLetterboxTopLeft, FitLetterboxCenter, FitStretch} {
		for _, size := range [][2]int{{810, 1080}, {1280, 720}, {416, 416}, {1920, 1080}, {300, 1000}} {
			g := NewGeometry(fit, size[0], size[1], 416, 416)
			for _, b := range boxes {
				b = Box{min(b.X1, float32(size[0])), min(b.Y1, float32(size[1])), min(b.X2, float32(size[0])), min(b.Y2, float32(size[1]))}
				in := g.ToInput(b)
				if in.X1 < float32(g.PadX)-1e-3 || in.X2 > float32(g.PadX+g.ResizedW)+1e-3 {
					t.Errorf("fit %d %v: %v maps outside the resized area: %v", fit, size, b, in)
				}
				back := g.ToSource(in)
				for i, v := range [4]float32{back.X1 - b.X1, back.Y1 - b.Y1, back.X2 - b.X2, back.Y2 - b.Y2} {
					if math.Abs(float64(v)) > 1e-3*float64(max(size[0], size[1])) {
						t.Errorf("fit %d %v: round trip of %v gave %v (coordinate %d off by %g)", fit, size, b, back, i, v)
					}
				}
			}
		}
	}
}

func TestToSourceClips(t *testing.T) {
	g := NewGeometry(FitLetterboxTopLeft, 810, 1080, 416, 416)
	got := g.ToSource(Box{-20, -20, 500, 500})
	want := Box{0, 0, 810, 1080}
	if got != want {
		t.Errorf("got %v, want %v", got, want)
	}
}
