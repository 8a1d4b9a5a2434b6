package inference

import "fmt"

// Box is an axis-aligned rectangle in source-image pixels; (X1, Y1) is the
// top-left corner and (X2, Y2) the bottom-right one.
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

// Area of the box; 0 for an empty or inverted box.
func (b Box) Area() float32 {
	w, h := b.Width(), b.Height()
	if w <= 0 || h <= 0 {
		return 0
	}
	return w * h
}

// IoU is the intersection over union of two boxes, in [0, 1].
func (b Box) IoU(o Box) float32 {
	x1, y1 := max(b.X1, o.X1), max(b.Y1, o.Y1)
	x2, y2 := min(b.X2, o.X2), min(b.Y2, o.Y2)
	if x2 <= x1 || y2 <= y1 {
		return 0
	}
	inter := (x2 - x1) * (y2 - y1)
	union := b.Area() + o.Area() - inter
	if union <= 0 {
		return 0
	}
	return inter / union
}

// Center of the box.
func (b Box) Center() (x, y float32) { return (b.X1 + b.X2) / 2, (b.Y1 + b.Y2) / 2 }

// Shift moves the box by dx, dy.
func (b Box) Shift(dx, dy float32) Box { return Box{b.X1 + dx, b.Y1 + dy, b.X2 + dx, b.Y2 + dy} }

// Detection is one object found in an image. For a classifier it is one of
// the top-k classes and Box covers the whole image.
type Detection struct {
	Box     Box     `json:"box"`
	ClassID int     `json:"classId"`
	Label   string  `json:"label"`
	Score   float32 `json:"score"`
}

func (d Detection) String() string {
	return fmt.Sprintf("%s %.2f [%.0f %.0f %.0f %.0f]", d.Label, d.Score, d.Box.X1, d.Box.Y1, d.Box.X2, d.Box.Y2)
}
