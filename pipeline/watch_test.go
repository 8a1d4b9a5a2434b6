package pipeline

import (
	"testing"
	"testing/synctest"
	"time"

	"ledge/internal/testenv"
	"ledge/pipeline/source"
)

// TestWatchEncodesOnlyWhileWatched: no JPEG is encoded while nobody
// watches; a viewer gets annotated frames; when it leaves, encoding stops.
func TestWatchEncodesOnlyWhileWatched(t *testing.T) {
	e := newTestEngine(t, []Spec{{Name: "w", Source: source.Spec{URL: "testpattern:", FPS: 50, Width: 320, Height: 240}}},
		func(o *Options) { o.Config.WatchFPS = 20 })
	run(t, e)
	waitFor(t, 10*time.Second, "frames", func() bool { s, _ := e.PipelineStats("w"); return s.FramesOut > 20 })
	if s, _ := e.PipelineStats("w"); s.Encodes != 0 || s.Watchers != 0 {
		t.Fatalf("%d encodes with nobody watching, want 0", s.Encodes)
	}
	frames, cancel, err := e.Watch("w", 0)
	if err != nil {
		t.Fatal(err)
	}
	watched := time.Now()
	var last uint64
	for range 5 {
		select {
		case f := <-frames:
			if len(f.Data) < 500 || f.Data[0] != 0xFF || f.Data[1] != 0xD8 || f.Frame <= last {
				t.Errorf("frame %d: %d bytes, not a newer JPEG", f.Frame, len(f.Data))
			}
			last = f.Frame
		case <-time.After(5 * time.Second * testenv.Slowdown()):
			t.Fatal("no frame within 5 s")
		}
	}
	s, _ := e.PipelineStats("w")
	if rate := float64(s.Encodes) / time.Since(watched).Seconds(); s.Watchers != 1 || s.Encodes < 5 || rate > 25 {
		t.Errorf("watchers %d, encodes %d (%.0f/s): want one viewer and at most watchFps (20) encodes a second", s.Watchers, s.Encodes, rate)
	}
	if j, _ := e.LatestFrame("w"); len(j.Data) == 0 {
		t.Error("LatestFrame is empty while watched")
	}
	cancel()
	// The viewer gone, and two frames through since (an encode begun
	// before is done): from here on, frames go on and no encode comes.
	var s0 Stats
	waitFor(t, 5*time.Second, "the viewer gone", func() bool { s0, _ = e.PipelineStats("w"); return s0.Watchers == 0 })
	waitFor(t, 5*time.Second, "frames after the viewer left", func() bool { s, _ := e.PipelineStats("w"); return s.FramesOut >= s0.FramesOut+2 })
	s1, _ := e.PipelineStats("w")
	waitFor(t, 10*time.Second, "20 more frames", func() bool { s, _ := e.PipelineStats("w"); return s.FramesOut >= s1.FramesOut+20 })
	s2, _ := e.PipelineStats("w")
	if s2.Encodes != s1.Encodes || s2.Watchers != 0 || s2.FramesOut <= s1.FramesOut {
		t.Errorf("after the viewer left: encodes %d -> %d, frames %d -> %d; want no new encodes while frames go on",
			s1.Encodes, s2.Encodes, s1.FramesOut, s2.FramesOut)
	}
	if _, _, err := e.Watch("nope", 0); err == nil {
		t.Error("watching an unknown pipeline: no error")
	}
}

// TestWatchRates: a viewer that asks for 2 frames a second gets about
// that many, and alone it costs only as many encodes; a full-rate viewer
// beside it still gets watchFps.
func TestWatchRates(t *testing.T) { synctest.Test(t, testWatchRates) }

func testWatchRates(t *testing.T) {
	e := newTestEngine(t, []Spec{{Name: "w", Source: source.Spec{URL: "testpattern:", FPS: 50, Width: 320, Height: 240}}},
		func(o *Options) { o.Config.WatchFPS = 20 })
	run(t, e)
	waitFor(t, 10*time.Second, "frames", func() bool { s, _ := e.PipelineStats("w"); return s.FramesOut > 20 })
	count := func(ch <-chan JPEG, d time.Duration) int {
		n := 0
		end := time.After(d)
		for {
			select {
			case <-ch:
				n++
			case <-end:
				return n
			}
		}
	}
	slow, cancelSlow, err := e.Watch("w", 2)
	if err != nil {
		t.Fatal(err)
	}
	defer cancelSlow()
	<-slow // the first frame comes at once
	s0, _ := e.PipelineStats("w")
	got := count(slow, 2*time.Second)
	s1, _ := e.PipelineStats("w")
	if got < 2 || got > 6 {
		t.Errorf("a 2 fps viewer got %d frames in 2 s, want about 4", got)
	}
	if enc := s1.Encodes - s0.Encodes; enc > 7 {
		t.Errorf("%d encodes in 2 s for a 2 fps viewer alone, want about 4", enc)
	}

	fast, cancelFast, err := e.Watch("w", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer cancelFast()
	var nSlow, nFast int
	done := make(chan struct{})
	go func() { nSlow = count(slow, 2*time.Second); close(done) }()
	nFast = count(fast, 2*time.Second)
	<-done
	if nSlow < 2 || nSlow > 6 || nFast < 3*nSlow {
		t.Errorf("side by side in 2 s: the 2 fps viewer got %d frames (want about 4), the full-rate one %d (want about 40)", nSlow, nFast)
	}
}
