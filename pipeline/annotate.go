package pipeline

import (
	"fmt"
	"image"
	"image/color"
	"slices"

	"gocv.io/x/gocv"
)

var palette = []color.RGBA{
	{255, 56, 56, 0}, {255, 157, 151, 0}, {255, 112, 31, 0}, {255, 178, 29, 0}, {207, 210, 49, 0},
	{72, 249, 10, 0}, {146, 204, 23, 0}, {61, 219, 134, 0}, {26, 147, 52, 0}, {0, 212, 187, 0},
	{44, 153, 168, 0}, {0, 194, 255, 0}, {52, 69, 147, 0}, {100, 115, 255, 0}, {0, 24, 236, 0},
	{132, 56, 255, 0}, {82, 0, 133, 0}, {203, 56, 255, 0}, {255, 149, 200, 0}, {255, 55, 199, 0},
}

// annotate draws zones (outlines with names) and objects (boxes with label,
// track id and score) onto img, an 8-bit BGR frame.
func annotate(img *gocv.Mat, objs []Object, zones []zone, caption string) {
	w, h := img.Cols(), img.Rows()
	thick := max(1, (w+h)/600)
	scale := float64(thick) * 0.5
	zc := color.RGBA{0, 255, 255, 0}
	var taken []image.Rectangle // zone names, which box labels keep clear of
	for _, z := range zones {
		pts := make([]image.Point, len(z.poly))
		for i, p := range z.poly {
			pts[i] = image.Pt(int(p[0]*float64(w)), int(p[1]*float64(h)))
		}
		pv := gocv.NewPointsVectorFromPoints([][]image.Point{pts})
		gocv.Polylines(img, pv, true, zc, thick)
		pv.Close()
		if len(pts) > 0 {
			at := pts[0].Add(image.Pt(4, int(20*scale)+4))
			gocv.PutText(img, z.name, at, gocv.FontHersheySimplex, scale, zc, thick)
			sz, base := gocv.GetTextSizeWithBaseline(z.name, gocv.FontHersheySimplex, scale, thick)
			taken = append(taken, image.Rect(at.X, at.Y-sz.Y, at.X+sz.X, at.Y+base))
		}
	}
	boxes := make([]image.Rectangle, len(objs))
	texts := make([]string, len(objs))
	sizes := make([]image.Point, len(objs))
	bases := make([]int, len(objs))
	for i, o := range objs {
		c := palette[abs(o.ClassID)%len(palette)]
		boxes[i] = image.Rect(int(o.Box.X1), int(o.Box.Y1), int(o.Box.X2), int(o.Box.Y2))
		gocv.Rectangle(img, boxes[i], c, thick)
		texts[i] = fmt.Sprintf("%s %.2f", o.Label, o.Score)
		if o.TrackID != 0 {
			texts[i] = fmt.Sprintf("#%d %s %.2f", o.TrackID, o.Label, o.Score)
		}
		sz, base := gocv.GetTextSizeWithBaseline(texts[i], gocv.FontHersheySimplex, scale, thick)
		sizes[i], bases[i] = image.Pt(sz.X, sz.Y+base), base
	}
	for i, r := range placeLabels(boxes, sizes, w, h, taken) {
		c := palette[abs(objs[i].ClassID)%len(palette)]
		gocv.Rectangle(img, r, c, -1)
		gocv.PutText(img, texts[i], image.Pt(r.Min.X, r.Max.Y-bases[i]), gocv.FontHersheySimplex, scale, color.RGBA{255, 255, 255, 0}, thick)
	}
	if caption != "" {
		gocv.PutText(img, caption, image.Pt(8, h-8), gocv.FontHersheySimplex, scale, color.RGBA{255, 255, 255, 0}, thick)
	}
}

// placeLabels places each box's label (of the given size) so that no two
// labels overlap, nor cover a taken rectangle (a zone's name), where it
// can: above the box's top-left corner, else just inside it, else below
// the box, else moved down in steps from above the box; always within the
// w x h frame. It returns the labels' rectangles.
func placeLabels(boxes []image.Rectangle, sizes []image.Point, w, h int, taken []image.Rectangle) []image.Rectangle {
	out := make([]image.Rectangle, len(boxes))
	frame := image.Rect(0, 0, w, h)
	clamp := func(r image.Rectangle) image.Rectangle {
		if r.Max.X > w {
			r = r.Add(image.Pt(w-r.Max.X, 0))
		}
		if r.Min.X < 0 {
			r = r.Add(image.Pt(-r.Min.X, 0))
		}
		if r.Max.Y > h {
			r = r.Add(image.Pt(0, h-r.Max.Y))
		}
		if r.Min.Y < 0 {
			r = r.Add(image.Pt(0, -r.Min.Y))
		}
		return r
	}
	free := func(r image.Rectangle, placed []image.Rectangle) bool {
		if !r.In(frame) {
			return false
		}
		for _, p := range placed {
			if r.Overlaps(p) {
				return false
			}
		}
		return true
	}
	for i, b := range boxes {
		sz := sizes[i]
		at := func(x, y int) image.Rectangle { return clamp(image.Rect(x, y, x+sz.X, y+sz.Y)) }
		cands := []image.Rectangle{
			at(b.Min.X, b.Min.Y-sz.Y), // above
			at(b.Min.X, b.Min.Y),      // inside, top
			at(b.Min.X, b.Max.Y),      // below
			at(b.Max.X-sz.X, b.Min.Y-sz.Y),
		}
		out[i] = cands[0]
		placed := false
		placedSoFar := append(slices.Clone(taken), out[:i]...)
		for _, c := range cands {
			if free(c, placedSoFar) {
				out[i], placed = c, true
				break
			}
		}
		for y := b.Min.Y; !placed && y+sz.Y <= h; y += max(1, sz.Y/2) {
			if c := at(b.Min.X, y); free(c, placedSoFar) {
				out[i], placed = c, true
			}
		}
	}
	return out
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// encodeJPEG encodes img at quality q (1-100).
func encodeJPEG(img gocv.Mat, q int) ([]byte, error) {
	buf, err := gocv.IMEncodeWithParams(gocv.JPEGFileExt, img, []int{gocv.IMWriteJpegQuality, q})
	if err != nil {
		return nil, err
	}
	defer buf.Close()
	return append([]byte(nil), buf.GetBytes()...), nil
}
