package pipeline

import (
	"fmt"

	"ledge/pipeline/detect"
)

// Box is a rectangle in frame pixels, (X1, Y1) its top-left corner, and
// Detection one object the detect stage found: package inference's types,
// which the detect stage hands on as they are.
type (
	Box       = detect.Box
	Detection = detect.Detection
)

// Point is a position in normalised frame coordinates: (0, 0) is the
// top-left corner, (1, 1) the bottom-right one.
type Point [2]float64

// Polygon is a closed polygon in normalised coordinates.
type Polygon []Point

// Contains reports whether p lies inside the polygon (even-odd rule).
func (pg Polygon) Contains(p Point) bool {
	in := false
	n := len(pg)
	for i, j := 0, n-1; i < n; j, i = i, i+1 {
		a, b := pg[i], pg[j]
		if (a[1] > p[1]) != (b[1] > p[1]) && p[0] < (b[0]-a[0])*(p[1]-a[1])/(b[1]-a[1])+a[0] {
			in = !in
		}
	}
	return in
}

// Object is one detection in a frame (a box in frame pixels, a class and
// a score) and the id of its track once the tracker has confirmed it.
type Object struct {
	Detection
	TrackID int64 `json:"trackId,omitempty"`
}

// String is the detection and its track.
func (o Object) String() string { return fmt.Sprintf("%v #%d", o.Detection, o.TrackID) }

// anchor is the point of a box that decides zone membership: the middle of
// its bottom edge (where a person stands), normalised by the frame size.
func anchor(b Box, w, h int) Point {
	cx, _ := b.Center()
	return Point{float64(cx) / float64(w), float64(b.Y2) / float64(h)}
}
