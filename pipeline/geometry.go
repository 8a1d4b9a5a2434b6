package pipeline

// Box is an axis-aligned rectangle in frame pixels; (X1, Y1) is the
// top-left corner.
type Box struct {
	X1 float32 `json:"x1"`
	Y1 float32 `json:"y1"`
	X2 float32 `json:"x2"`
	Y2 float32 `json:"y2"`
}

// Width of the box.
func (b Box) Width() float32 { return b.X2 - b.X1 }

// Height of the box.
func (b Box) Height() float32 { return b.Y2 - b.Y1 }

// Area of the box; 0 when empty.
func (b Box) Area() float32 {
	if b.X2 <= b.X1 || b.Y2 <= b.Y1 {
		return 0
	}
	return (b.X2 - b.X1) * (b.Y2 - b.Y1)
}

// IoU is the intersection over union of two boxes.
func (b Box) IoU(o Box) float32 {
	x1, y1 := max(b.X1, o.X1), max(b.Y1, o.Y1)
	x2, y2 := min(b.X2, o.X2), min(b.Y2, o.Y2)
	if x2 <= x1 || y2 <= y1 {
		return 0
	}
	inter := (x2 - x1) * (y2 - y1)
	u := b.Area() + o.Area() - inter
	if u <= 0 {
		return 0
	}
	return inter / u
}

// Center of the box.
func (b Box) Center() (float32, float32) { return (b.X1 + b.X2) / 2, (b.Y1 + b.Y2) / 2 }

// Shift moves the box by dx, dy.
func (b Box) Shift(dx, dy float32) Box { return Box{b.X1 + dx, b.Y1 + dy, b.X2 + dx, b.Y2 + dy} }

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

// Object is one detection in a frame: a box in frame pixels, a class and a
// score, and the id of its track once the tracker has seen it.
type Object struct {
	Box     Box     `json:"box"`
	ClassID int     `json:"classId"`
	Label   string  `json:"label"`
	Score   float32 `json:"score"`
	TrackID int64   `json:"trackId,omitempty"`
}

// anchor is the point of a box that decides zone membership: the middle of
// its bottom edge (where a person stands), normalised by the frame size.
func anchor(b Box, w, h int) Point {
	cx, _ := b.Center()
	return Point{float64(cx) / float64(w), float64(b.Y2) / float64(h)}
}
