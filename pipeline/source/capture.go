package source

import (
	"context"
	"fmt"
	"ledge/internal/redact"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"gocv.io/x/gocv"
)

// capture reads a V4L2 device, a stream or a video file with OpenCV.
type capture struct {
	vc       *gocv.VideoCapture
	kind     Kind
	realtime bool
	loop     bool
	path     string
	fps      float64
	start    time.Time     // wall time of media time 0 (files)
	offset   time.Duration // media time added by earlier loops
	last     time.Duration // last media time read (in this pass)
	read     int           // frames read in this pass
	wait     time.Duration // waited for the pace in the last Read
}

var ffmpegOptionsOnce sync.Once

// setFFmpegTimeouts gives OpenCV's FFmpeg backend socket timeouts, so a
// stalled network stream returns an error instead of blocking a read
// forever (unless the operator set the options already).
func setFFmpegTimeouts() {
	ffmpegOptionsOnce.Do(func() {
		if os.Getenv("OPENCV_FFMPEG_CAPTURE_OPTIONS") == "" {
			os.Setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rw_timeout;5000000|stimeout;5000000")
		}
	})
}

func openCapture(s Spec, t Target) (Reader, error) {
	var (
		vc  *gocv.VideoCapture
		err error
	)
	switch t.Kind {
	case KindV4L2:
		n, _ := strconv.Atoi(strings.TrimPrefix(t.Path, "/dev/video"))
		vc, err = gocv.VideoCaptureDeviceWithAPI(n, gocv.VideoCaptureV4L2)
		if err == nil {
			if s.FourCC != "" {
				vc.Set(gocv.VideoCaptureFOURCC, vc.ToCodec(s.FourCC))
			}
			if s.Width > 0 {
				vc.Set(gocv.VideoCaptureFrameWidth, float64(s.Width))
				vc.Set(gocv.VideoCaptureFrameHeight, float64(s.Height))
			}
			if s.FPS > 0 {
				vc.Set(gocv.VideoCaptureFPS, s.FPS)
			}
		}
	case KindStream:
		setFFmpegTimeouts()
		vc, err = gocv.VideoCaptureFileWithAPI(t.Path, gocv.VideoCaptureFFmpeg)
	default:
		if _, serr := os.Stat(t.Path); serr != nil {
			return nil, serr
		}
		vc, err = gocv.VideoCaptureFileWithAPI(t.Path, gocv.VideoCaptureFFmpeg)
	}
	shown := redact.URL(t.Path) // a stream URL may carry a password
	if err == nil && !vc.IsOpened() {
		vc.Close()
		err = fmt.Errorf("not opened")
	}
	if err != nil {
		// OpenCV's own message ("Error opening file: URL with api backend:
		// 1900") says nothing; FFmpeg wrote the cause to stderr, which
		// `ledge run` logs at debug level.
		why := "cannot open it"
		switch t.Kind {
		case KindStream:
			why = "no stream: the camera is offline or refuses (wrong address, path or credentials?); FFmpeg's own words are logged at debug level (log.level: debug in ledge.yaml)"
		case KindV4L2:
			why = "cannot open the device (unplugged, busy, or no permission?)"
		case KindFile:
			why = "not a video OpenCV can read"
		}
		return nil, fmt.Errorf("open %s: %s", shown, why)
	}
	c := &capture{vc: vc, kind: t.Kind, realtime: s.Realtime, loop: s.Loop, path: t.Path, fps: vc.Get(gocv.VideoCaptureFPS)}
	if c.fps <= 0 || c.fps > 1000 {
		c.fps = 25
	}
	return c, nil
}

func (c *capture) Read(ctx context.Context, dst *gocv.Mat) (time.Time, error) {
	if c.kind == KindV4L2 || c.kind == KindStream {
		if !c.vc.Read(dst) || dst.Empty() {
			return time.Time{}, fmt.Errorf("read %s: stream ended or failed", c.path)
		}
		return time.Now(), nil
	}
	if c.start.IsZero() {
		c.start = time.Now()
	}
	if !c.vc.Read(dst) || dst.Empty() {
		if !c.loop {
			return time.Time{}, ErrEnd
		}
		// Rewind: reopening is more robust across containers than seeking.
		c.offset += c.last + time.Duration(float64(time.Second)/c.fps)
		c.last, c.read = 0, 0
		c.vc.Close()
		vc, err := gocv.VideoCaptureFileWithAPI(c.path, gocv.VideoCaptureFFmpeg)
		if err != nil || !vc.IsOpened() {
			if vc != nil {
				vc.Close()
			}
			c.vc = nil
			return time.Time{}, fmt.Errorf("reopen %s to loop: %v", c.path, err)
		}
		c.vc = vc
		if !c.vc.Read(dst) || dst.Empty() {
			return time.Time{}, fmt.Errorf("read %s: no frame after rewinding", c.path)
		}
	}
	// Media time from the container, kept monotonic: OpenCV reports 0 for
	// the last frames of some files, so a position that does not advance
	// is extrapolated by one frame.
	pos := time.Duration(c.vc.Get(gocv.VideoCapturePosMsec) * float64(time.Millisecond))
	if c.read > 0 && pos <= c.last {
		pos = c.last + time.Duration(float64(time.Second)/c.fps)
	}
	c.last = pos
	c.read++
	media := c.offset + c.last
	at := c.start.Add(media)
	c.wait = 0
	if c.realtime {
		if d := time.Until(at); d > 0 {
			t0 := time.Now()
			if err := sleep(ctx, d); err != nil {
				return time.Time{}, err
			}
			c.wait = time.Since(t0)
		}
	}
	return at, nil
}

// Waited reports the pacing wait of a file read in real time, or that a
// camera's or stream's whole Read was waiting (OpenCV blocks for the next
// frame and decodes it in one call; gocv has no separate retrieve).
func (c *capture) Waited() (time.Duration, bool) {
	return c.wait, c.kind == KindV4L2 || c.kind == KindStream
}

func (c *capture) Close() error {
	if c.vc != nil {
		return c.vc.Close()
	}
	return nil
}
