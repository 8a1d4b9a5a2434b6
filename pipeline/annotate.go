package pipeline

import (
	"fmt"
	"image"
	"image/color"

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
	for _, z := range zones {
		pts := make([]image.Point, len(z.poly))
		for i, p := range z.poly {
			pts[i] = image.Pt(int(p[0]*float64(w)), int(p[1]*float64(h)))
		}
		pv := gocv.NewPointsVectorFromPoints([][]image.Point{pts})
		gocv.Polylines(img, pv, true, zc, thick)
		pv.Close()
		if len(pts) > 0 {
			gocv.PutText(img, z.name, pts[0].Add(image.Pt(4, int(20*scale)+4)), gocv.FontHersheySimplex, scale, zc, thick)
		}
	}
	for _, o := range objs {
		c := palette[abs(o.ClassID)%len(palette)]
		r := image.Rect(int(o.Box.X1), int(o.Box.Y1), int(o.Box.X2), int(o.Box.Y2))
		gocv.Rectangle(img, r, c, thick)
		text := fmt.Sprintf("%s %.2f", o.Label, o.Score)
		if o.TrackID != 0 {
			text = fmt.Sprintf("#%d %s %.2f", o.TrackID, o.Label, o.Score)
		}
		size, base := gocv.GetTextSizeWithBaseline(text, gocv.FontHersheySimplex, scale, thick)
		top := r.Min.Y - size.Y - base
		if top < 0 {
			top = r.Min.Y
		}
		left := max(0, min(r.Min.X, w-size.X))
		gocv.Rectangle(img, image.Rect(left, top, left+size.X, top+size.Y+base), c, -1)
		gocv.PutText(img, text, image.Pt(left, top+size.Y), gocv.FontHersheySimplex, scale, color.RGBA{255, 255, 255, 0}, thick)
	}
	if caption != "" {
		gocv.PutText(img, caption, image.Pt(8, h-8), gocv.FontHersheySimplex, scale, color.RGBA{255, 255, 255, 0}, thick)
	}
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
