package source

import (
	"context"
	"image"
	"image/color"
	"math"
	"strconv"
	"time"

	"gocv.io/x/gocv"
)

// pattern draws moving shapes on a grey field: a circle on an ellipse, a
// square bouncing across, and a frame counter. It is paced at its FPS, so
// a pipeline runs with no camera at all.
type pattern struct {
	w, h  int
	step  time.Duration
	start time.Time
	n     int
	wait  time.Duration // waited for the pace in the last Read
}

// Test pattern defaults.
const (
	PatternWidth  = 640
	PatternHeight = 480
	PatternFPS    = 15
)

func newPattern(s Spec) *pattern {
	p := &pattern{w: s.Width, h: s.Height}
	if p.w == 0 {
		p.w, p.h = PatternWidth, PatternHeight
	}
	fps := s.FPS
	if fps <= 0 {
		fps = PatternFPS
	}
	p.step = time.Duration(float64(time.Second) / fps)
	return p
}

func (p *pattern) Read(ctx context.Context, dst *gocv.Mat) (time.Time, error) {
	now := time.Now()
	if p.start.IsZero() {
		p.start = now
	}
	at := p.start.Add(time.Duration(p.n) * p.step)
	p.wait = 0
	if d := at.Sub(now); d > 0 {
		if err := sleep(ctx, d); err != nil {
			return time.Time{}, err
		}
		p.wait = time.Since(now)
	} else if -d > 10*p.step {
		// Fell far behind (the machine was busy): do not burst to catch up.
		p.start, p.n, at = now, 0, now
	}
	Draw(dst, p.w, p.h, p.n)
	p.n++
	return at, nil
}

func (p *pattern) Close() error { return nil }

// Waited reports the pacing wait of the last Read.
func (p *pattern) Waited() (time.Duration, bool) { return p.wait, false }

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Draw renders frame n of the test pattern into dst (w x h, 8-bit BGR).
func Draw(dst *gocv.Mat, w, h, n int) {
	if dst.Empty() || dst.Cols() != w || dst.Rows() != h || dst.Type() != gocv.MatTypeCV8UC3 {
		dst.Close()
		*dst = gocv.NewMatWithSize(h, w, gocv.MatTypeCV8UC3)
	}
	dst.SetTo(gocv.NewScalar(64, 64, 64, 0))
	t := float64(n)
	// A circle moving on an ellipse.
	cx := float64(w)/2 + float64(w)/3*math.Cos(t/20)
	cy := float64(h)/2 + float64(h)/3*math.Sin(t/20)
	gocv.Circle(dst, image.Pt(int(cx), int(cy)), max(8, h/10), color.RGBA{40, 200, 255, 0}, -1)
	// A square bouncing left and right.
	side := max(8, h/6)
	span := max(1, w-side)
	x := int(t*4) % (2 * span)
	if x > span {
		x = 2*span - x
	}
	y := h - side - h/12
	gocv.Rectangle(dst, image.Rect(x, y, x+side, y+side), color.RGBA{60, 220, 60, 0}, -1)
	gocv.PutText(dst, "ledge test pattern "+strconv.Itoa(n), image.Pt(10, 24), gocv.FontHersheySimplex, 0.6, color.RGBA{255, 255, 255, 0}, 1)
}
