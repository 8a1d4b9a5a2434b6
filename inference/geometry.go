package inference

import "math"

// Fit says how a source image is fitted into the network input.
type Fit int

const (
	// FitLetterboxTopLeft keeps the aspect ratio and pads right and bottom
	// (YOLOX).
	FitLetterboxTopLeft Fit = iota
	// FitLetterboxCenter keeps the aspect ratio and pads evenly on both
	// sides (Ultralytics).
	FitLetterboxCenter
	// FitStretch resizes to the input size, ignoring the aspect ratio
	// (FastestDet, classifiers).
	FitStretch
)

// Geometry maps between source-image pixels and network-input pixels. The
// resized image occupies [PadX, PadX+ResizedW) x [PadY, PadY+ResizedH) of
// the input.
type Geometry struct {
	SrcW, SrcH         int
	InW, InH           int
	ScaleX, ScaleY     float32 // input pixels per source pixel
	ResizedW, ResizedH int
	PadX, PadY         int
}

// NewGeometry computes how a srcW x srcH image is fitted into inW x inH.
func NewGeometry(fit Fit, srcW, srcH, inW, inH int) Geometry {
	g := Geometry{SrcW: srcW, SrcH: srcH, InW: inW, InH: inH}
	if fit == FitStretch {
		g.ScaleX, g.ScaleY = float32(inW)/float32(srcW), float32(inH)/float32(srcH)
		g.ResizedW, g.ResizedH = inW, inH
		return g
	}
	r := math.Min(float64(inW)/float64(srcW), float64(inH)/float64(srcH))
	g.ResizedW = min(inW, max(1, int(math.Round(float64(srcW)*r))))
	g.ResizedH = min(inH, max(1, int(math.Round(float64(srcH)*r))))
	g.ScaleX, g.ScaleY = float32(r), float32(r)
	if fit == FitLetterboxCenter {
		g.PadX, g.PadY = (inW-g.ResizedW)/2, (inH-g.ResizedH)/2
	}
	return g
}

// ToSource maps a box in network-input pixels to source pixels, clipped to
// the image.
func (g Geometry) ToSource(b Box) Box {
	px, py := float32(g.PadX), float32(g.PadY)
	w, h := float32(g.SrcW), float32(g.SrcH)
	return Box{
		X1: clamp((b.X1-px)/g.ScaleX, 0, w),
		Y1: clamp((b.Y1-py)/g.ScaleY, 0, h),
		X2: clamp((b.X2-px)/g.ScaleX, 0, w),
		Y2: clamp((b.Y2-py)/g.ScaleY, 0, h),
	}
}

// ToInput maps a box in source pixels to network-input pixels.
func (g Geometry) ToInput(b Box) Box {
	px, py := float32(g.PadX), float32(g.PadY)
	return Box{X1: b.X1*g.ScaleX + px, Y1: b.Y1*g.ScaleY + py, X2: b.X2*g.ScaleX + px, Y2: b.Y2*g.ScaleY + py}
}

func clamp(v, lo, hi float32) float32 { return min(max(v, lo), hi) }
