package pipeline

import (
	"image"
	"time"

	"gocv.io/x/gocv"
)

// Motion gate defaults.
const (
	DefaultMotionThreshold = 25
	DefaultMotionMinArea   = 0.003
	DefaultMotionWidth     = 160
	DefaultMotionHold      = time.Second
)

// motionGate tells whether a frame differs enough from the previous one to
// be worth a detection: it shrinks the frame to a small grey image, blurs
// it, and counts the pixels that changed by more than the threshold. It is
// used by the process goroutine; its Mats are closed by close.
type motionGate struct {
	threshold  float32
	minArea    float64
	width      int
	hold       time.Duration
	small      gocv.Mat
	gray       gocv.Mat
	prev       gocv.Mat
	diff       gocv.Mat
	lastMotion time.Time
	primed     bool
}

func newMotionGate(s *MotionSpec) *motionGate {
	g := &motionGate{threshold: float32(s.Threshold), minArea: s.MinArea, width: s.Width, hold: s.Hold,
		small: gocv.NewMat(), gray: gocv.NewMat(), prev: gocv.NewMat(), diff: gocv.NewMat()}
	if g.threshold == 0 {
		g.threshold = DefaultMotionThreshold
	}
	if g.minArea == 0 {
		g.minArea = DefaultMotionMinArea
	}
	if g.width == 0 {
		g.width = DefaultMotionWidth
	}
	if g.hold == 0 {
		g.hold = DefaultMotionHold
	}
	return g
}

// moving reports whether frame (scene time t) should be detected: there is
// motion now or there was some within the hold time. The first frame
// always counts as motion.
func (g *motionGate) moving(frame gocv.Mat, t time.Time) bool {
	w := min(g.width, frame.Cols())
	h := max(1, frame.Rows()*w/max(1, frame.Cols()))
	gocv.Resize(frame, &g.small, image.Pt(w, h), 0, 0, gocv.InterpolationArea)
	if g.small.Channels() == 3 {
		gocv.CvtColor(g.small, &g.gray, gocv.ColorBGRToGray)
	} else {
		g.small.CopyTo(&g.gray)
	}
	gocv.GaussianBlur(g.gray, &g.gray, image.Pt(5, 5), 0, 0, gocv.BorderDefault)
	motion := true
	if g.primed && g.prev.Cols() == g.gray.Cols() && g.prev.Rows() == g.gray.Rows() {
		gocv.AbsDiff(g.gray, g.prev, &g.diff)
		gocv.Threshold(g.diff, &g.diff, g.threshold, 255, gocv.ThresholdBinary)
		changed := gocv.CountNonZero(g.diff)
		motion = float64(changed) >= g.minArea*float64(w*h)
	}
	g.prev, g.gray = g.gray, g.prev
	g.primed = true
	if motion {
		g.lastMotion = t
		return true
	}
	return t.Sub(g.lastMotion) <= g.hold
}

func (g *motionGate) close() {
	g.small.Close()
	g.gray.Close()
	g.prev.Close()
	g.diff.Close()
}
