package inference

import (
	"fmt"
	"image"

	"gocv.io/x/gocv"
)

// Preprocess says how an adapter wants its input tensor filled: how the
// image is fitted, the channel order and the value scale. The tensor is
// float32 NCHW.
type Preprocess struct {
	Fit   Fit
	RGB   bool    // channels R, G, B; false means B, G, R (OpenCV's order)
	Scale float32 // multiplies the 0..255 pixel values: 1 or 1/255
	Pad   uint8   // letterbox padding value before scaling
}

// filler turns BGR frames into the input tensor of one session. It is used
// by one goroutine at a time (it belongs to a session slot).
type filler struct {
	p       Preprocess
	inW     int
	inH     int
	lut     [256]float32
	resized gocv.Mat // scratch, owned by the filler; closed by close
	bgr     gocv.Mat // scratch for gray or BGRA input; closed by close
	// padded is the geometry the padding was last written for: the pad
	// area of the tensor is only rewritten when the geometry changes.
	padded Geometry
}

func newFiller(p Preprocess, inW, inH int) *filler {
	f := &filler{p: p, inW: inW, inH: inH, resized: gocv.NewMat(), bgr: gocv.NewMat()}
	for i := range f.lut {
		f.lut[i] = float32(i) * p.Scale
	}
	return f
}

func (f *filler) close() {
	f.resized.Close()
	f.bgr.Close()
}

// fill letterboxes or resizes img (8-bit BGR, gray or BGRA) into dst, a
// 3 x inH x inW float32 tensor, and returns the geometry used.
func (f *filler) fill(img gocv.Mat, dst []float32) (Geometry, error) {
	if img.Empty() {
		return Geometry{}, fmt.Errorf("empty image")
	}
	src := img
	switch img.Type() {
	case gocv.MatTypeCV8UC3:
	case gocv.MatTypeCV8UC1:
		gocv.CvtColor(img, &f.bgr, gocv.ColorGrayToBGR)
		src = f.bgr
	case gocv.MatTypeCV8UC4:
		gocv.CvtColor(img, &f.bgr, gocv.ColorBGRAToBGR)
		src = f.bgr
	default:
		return Geometry{}, fmt.Errorf("unsupported image type %v (want 8-bit BGR, gray or BGRA)", img.Type())
	}
	g := NewGeometry(f.p.Fit, src.Cols(), src.Rows(), f.inW, f.inH)
	resized := src
	if g.ResizedW != src.Cols() || g.ResizedH != src.Rows() {
		gocv.Resize(src, &f.resized, image.Pt(g.ResizedW, g.ResizedH), 0, 0, gocv.InterpolationLinear)
		resized = f.resized
	}
	if !resized.IsContinuous() {
		resized = resized.Clone()
		defer resized.Close()
	}
	pix, err := resized.DataPtrUint8()
	if err != nil {
		return Geometry{}, fmt.Errorf("read pixels: %w", err)
	}
	if g != f.padded && (g.ResizedW != f.inW || g.ResizedH != f.inH) {
		pad := f.lut[f.p.Pad]
		for i := range dst {
			dst[i] = pad
		}
		f.padded = g
	}
	f.copyPixels(pix, g, dst)
	return g, nil
}

// copyPixels converts interleaved 8-bit BGR rows into the three planes of
// dst at the letterbox offset.
func (f *filler) copyPixels(pix []uint8, g Geometry, dst []float32) {
	plane := f.inW * f.inH
	rw, rh := g.ResizedW, g.ResizedH
	first, third := dst[:plane], dst[2*plane:3*plane]
	if f.p.RGB {
		first, third = third, first
	}
	second := dst[plane : 2*plane]
	lut := &f.lut
	for y := 0; y < rh; y++ {
		row := pix[y*rw*3 : (y+1)*rw*3]
		o := (y+g.PadY)*f.inW + g.PadX
		b, gr, r := first[o:o+rw], second[o:o+rw], third[o:o+rw]
		for x := range rw {
			px := row[x*3 : x*3+3]
			b[x] = lut[px[0]]
			gr[x] = lut[px[1]]
			r[x] = lut[px[2]]
		}
	}
}
