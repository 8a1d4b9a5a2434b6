package pipeline

import (
	"image"
	"testing"
)

// TestPlaceLabels: labels of boxes that crowd together do not cover each
// other, and stay in the frame.
func TestPlaceLabels(t *testing.T) {
	for _, tc := range []struct {
		name  string
		boxes []image.Rectangle
	}{
		{"people side by side", []image.Rectangle{image.Rect(100, 200, 180, 400), image.Rect(120, 205, 200, 410), image.Rect(140, 198, 230, 420)}},
		{"at the top edge", []image.Rectangle{image.Rect(0, 0, 100, 100), image.Rect(10, 2, 110, 120)}},
		{"nested", []image.Rectangle{image.Rect(50, 50, 600, 400), image.Rect(60, 60, 200, 200), image.Rect(55, 52, 300, 300)}},
		{"at the bottom right", []image.Rectangle{image.Rect(560, 440, 640, 480), image.Rect(570, 445, 640, 480)}},
		{"by a zone's name", []image.Rectangle{image.Rect(10, 330, 200, 470)}},
	} {
		sizes := make([]image.Point, len(tc.boxes))
		for i := range sizes {
			sizes[i] = image.Pt(110, 18)
		}
		zoneName := image.Rect(0, 300, 60, 318)
		got := placeLabels(tc.boxes, sizes, 640, 480, []image.Rectangle{zoneName})
		for i, r := range got {
			if !r.In(image.Rect(0, 0, 640, 480)) || r.Dx() != 110 || r.Dy() != 18 {
				t.Errorf("%s: label %d at %v, want 110x18 inside the frame", tc.name, i, r)
			}
			if r.Overlaps(zoneName) {
				t.Errorf("%s: label %d %v covers the zone's name", tc.name, i, r)
			}
			for j := range i {
				if r.Overlaps(got[j]) {
					t.Errorf("%s: labels %d %v and %d %v overlap", tc.name, i, r, j, got[j])
				}
			}
		}
		b := tc.boxes[0]
		if above := image.Rect(b.Min.X, b.Min.Y-18, b.Min.X+110, b.Min.Y); got[0].Max.Y != b.Min.Y && b.Min.Y >= 18 && !above.Overlaps(zoneName) {
			t.Errorf("%s: the first label is at %v, want above its box", tc.name, got[0])
		}
	}
}
