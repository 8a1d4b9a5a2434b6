package source

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"gocv.io/x/gocv"

	"ledge/internal/testenv"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		url  string
		kind Kind
		path string
		err  string
	}{
		{"testpattern:", KindTestPattern, "", ""},
		{"/dev/video2", KindV4L2, "/dev/video2", ""},
		{"v4l2:/dev/video0", KindV4L2, "/dev/video0", ""},
		{"v4l2:/dev/sda", "", "", "want v4l2:/dev/videoN"},
		{"rtsp://cam.local:554/stream1", KindStream, "rtsp://cam.local:554/stream1", ""},
		{"http://cam/mjpeg", KindStream, "http://cam/mjpeg", ""},
		{"https:///nohost", "", "", "no host"},
		{"file:/data/a.mp4", KindFile, "/data/a.mp4", ""},
		{"file:///data/a.mp4", KindFile, "/data/a.mp4", ""},
		{"clips/a.mp4", KindFile, "clips/a.mp4", ""},
		{"images:/data/*.jpg", KindImages, "/data/*.jpg", ""},
		{"images:/data/[", "", "", "bad glob"},
		{"ftp://x/y", "", "", `unknown scheme "ftp"`},
		{"", "", "", "must not be empty"},
	} {
		got, err := Spec{URL: tc.url}.Parse()
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.url, err, tc.err)
			}
			continue
		}
		if err != nil || got.Kind != tc.kind || got.Path != tc.path {
			t.Errorf("%q: got %+v, %v; want %s %s", tc.url, got, err, tc.kind, tc.path)
		}
	}
}

// sink collects frames.
type sink struct {
	mu     sync.Mutex
	frames []Frame
}

func (s *sink) Mat() gocv.Mat      { return gocv.NewMat() }
func (s *sink) Recycle(m gocv.Mat) { m.Close() }
func (s *sink) Put(ctx context.Context, f Frame) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.frames = append(s.frames, Frame{Time: f.Time, Seq: f.Seq, Captured: f.Captured})
	w, h := f.Mat.Cols(), f.Mat.Rows()
	f.Mat.Close()
	if w == 0 || h == 0 {
		return false
	}
	return true
}

func TestImagesEndAndLoop(t *testing.T) {
	dir := t.TempDir()
	img := gocv.IMRead(testenv.Media(t, "bus.jpg"), gocv.IMReadColor)
	defer img.Close()
	for _, n := range []string{"b.jpg", "a.jpg", "c.png"} {
		gocv.IMWrite(filepath.Join(dir, n), img)
	}
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not an image"), 0o600)

	var states []Phase
	s := &sink{}
	err := Run(t.Context(), Spec{URL: "images:" + dir}, s, func(st State) { states = append(states, st.Phase) })
	if err != nil {
		t.Fatal(err)
	}
	if len(s.frames) != 3 || states[len(states)-1] != PhaseEnded {
		t.Errorf("%d frames, states %v: want 3 frames and ended", len(s.frames), states)
	}
	// Looped and paced at 20 fps: 20 frames in a second. The clock is
	// synctest's, so a busy machine does not change the count.
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		s := &sink{}
		Run(ctx, Spec{URL: "images:" + dir + "/*.jpg", Loop: true, Realtime: true, FPS: 20}, s, func(State) {})
		if n := len(s.frames); n < 20 || n > 21 {
			t.Errorf("%d frames in 1 s at 20 fps", n)
		}
	})
}

func TestMissingFileBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		defer cancel()
		var last State
		var mu sync.Mutex
		Run(ctx, Spec{URL: "/nonexistent/clip.mp4", Backoff: Backoff{Initial: 50 * time.Millisecond, Max: 100 * time.Millisecond}}, &sink{},
			func(st State) {
				mu.Lock()
				defer mu.Unlock()
				if st.Phase == PhaseBackoff {
					last = st
				}
			})
		// 50, 100, 100, 100... ms apart: five failures in 500 ms.
		if last.Failures < 4 || last.Failures > 6 || !strings.Contains(last.Reason, "no such file") {
			t.Errorf("last back-off %+v: want five failures naming the missing file", last)
		}
	})
}

func TestPattern(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		defer cancel()
		s := &sink{}
		Run(ctx, Spec{URL: "testpattern:", Width: 160, Height: 120, FPS: 40}, s, func(State) {})
		if n := len(s.frames); n < 20 || n > 21 {
			t.Errorf("%d frames in 0.5 s at 40 fps", n)
		}
	})
}

// TestFileLoopPaced: a looped file read in real time keeps its pace across
// the loop (OpenCV reports position 0 for the last frames of some files).
func TestFileLoopPaced(t *testing.T) {
	ffmpeg := testenv.Command(t, "ffmpeg", "ffmpeg")
	path := filepath.Join(t.TempDir(), "short.mp4")
	if b, err := exec.Command(ffmpeg, "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=s=160x120:r=25:d=0.4",
		"-c:v", "libx264", "-preset", "veryfast", path).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v %s", err, b)
	}
	s := &sink{}
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 1200*time.Millisecond)
		defer cancel()
		Run(ctx, Spec{URL: "file:" + path, Loop: true, Realtime: true}, s, func(State) {})
		if n := len(s.frames); n < 30 || n > 31 {
			t.Errorf("%d frames in 1.2 s of a looped 25 fps file, want 30", n)
		}
	})
	for i := 1; i < len(s.frames); i++ {
		if !s.frames[i].Time.After(s.frames[i-1].Time) {
			t.Errorf("frame %d scene time %v is not after frame %d's %v", i, s.frames[i].Time, i-1, s.frames[i-1].Time)
		}
	}
}

// TestRunStopsWhenNeverBlocked: a source read faster than it is consumed
// (an unpaced looping image set, or a paced one on a machine too busy to
// keep up) still stops when its context ends, even when the sink does not
// look at the context.
func TestRunStopsWhenNeverBlocked(t *testing.T) {
	dir := t.TempDir()
	img := gocv.IMRead(testenv.Media(t, "bus.jpg"), gocv.IMReadColor)
	defer img.Close()
	gocv.IMWrite(filepath.Join(dir, "a.jpg"), img)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, Spec{URL: "images:" + dir, Loop: true}, &sink{}, func(State) {})
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run went on 5 s after its context ended")
	}
}
