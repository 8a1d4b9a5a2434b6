package inference

import (
	"fmt"
	"image"
	"image/color"

	"gocv.io/x/gocv"
)

// palette gives each class a stable, distinct colour.
var palette = []color.RGBA{
	{255, 56, 56, 255}, {255, 157, 151, 255}, {255, 112, 31, 255}, {255, 178, 29, 255},
	{207, 210, 49, 255}, {72, 249, 10, 255}, {146, 204, 23, 255}, {61, 219, 134, 255},
	{26, 147, 52, 255}, {0, 212, 187, 255}, {44, 153, 168, 255}, {0, 194, 255, 255},
	{52, 69, 147, 255}, {100, 115, 255, 255}, {0, 24, 236, 255}, {132, 56, 255, 255},
	{82, 0, 133, 255}, {203, 56, 255, 255}, {255, 149, 200, 255}, {255, 55, 199, 255},
}

// ClassColor is the colour boxes of classID are drawn in.
func ClassColor(classID int) color.RGBA {
	if classID < 0 {
		classID = -classID
	}
	return palette[classID%len(palette)]
}

// Annotate draws each detection's box and "label score" onto img (8-bit
// BGR), scaling line width and text to the image size.
func Annotate(img *gocv.Mat, dets []Detection) {
	thick := max(1, (img.Cols()+img.Rows())/600)
	scale := float64(thick) * 0.5
	for _, d := range dets {
		c := ClassColor(d.ClassID)
		r := image.Rect(int(d.Box.X1), int(d.Box.Y1), int(d.Box.X2), int(d.Box.Y2))
		gocv.Rectangle(img, r, c, thick)
		text := fmt.Sprintf("%s %.2f", d.Label, d.Score)
		size, base := gocv.GetTextSizeWithBaseline(text, gocv.FontHersheySimplex, scale, thick)
		top := r.Min.Y - size.Y - base
		if top < 0 {
			top = r.Min.Y
		}
		left := max(0, min(r.Min.X, img.Cols()-size.X)) // keep the label inside the image
		bg := image.Rect(left, top, left+size.X, top+size.Y+base)
		gocv.Rectangle(img, bg, c, -1)
		gocv.PutText(img, text, image.Pt(left, top+size.Y), gocv.FontHersheySimplex, scale, color.RGBA{255, 255, 255, 255}, thick)
	}
}
