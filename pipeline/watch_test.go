package pipeline

import (
	"testing"
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
	frames, cancel, err := e.Watch("w")
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
	time.Sleep(200 * time.Millisecond)
	s1, _ := e.PipelineStats("w")
	time.Sleep(500 * time.Millisecond)
	s2, _ := e.PipelineStats("w")
	if s2.Encodes != s1.Encodes || s2.Watchers != 0 || s2.FramesOut <= s1.FramesOut {
		t.Errorf("after the viewer left: encodes %d -> %d, frames %d -> %d; want no new encodes while frames go on",
			s1.Encodes, s2.Encodes, s1.FramesOut, s2.FramesOut)
	}
	if _, _, err := e.Watch("nope"); err == nil {
		t.Error("watching an unknown pipeline: no error")
	}
}
