package pipeline

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gocv.io/x/gocv"

	"ledge/internal/fault"
	"ledge/internal/testenv"
	"ledge/pipeline/source"
)

// flaky is a test camera: the test pattern at 100 fps that fails at frame
// 37 of its first connection.
type flaky struct {
	n, conn int
}

var flakyOpens atomic.Int64

func init() {
	source.Register("flaky", func(ctx context.Context, s source.Spec, t source.Target) (source.Reader, error) {
		c := int(flakyOpens.Add(1))
		return &flaky{conn: c}, nil
	})
	source.Register("counting", func(ctx context.Context, s source.Spec, t source.Target) (source.Reader, error) {
		countingOpens.Add(1)
		return &flaky{conn: 2}, nil
	})
}

var countingOpens atomic.Int64

func (f *flaky) Read(ctx context.Context, dst *gocv.Mat) (time.Time, error) {
	select {
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	case <-time.After(10 * time.Millisecond):
	}
	f.n++
	if f.conn == 1 && f.n == 37 {
		return time.Time{}, errors.New("camera unplugged at frame 37")
	}
	source.Draw(dst, 320, 240, f.n)
	return time.Now(), nil
}

func (f *flaky) Close() error { return nil }

// TestSourceReconnects: a camera that dies at frame 37 is reopened after a
// back-off, its state shows the back-off and the reason, and the pipeline
// goes on.
func TestSourceReconnects(t *testing.T) {
	spec := Spec{Name: "cam", Source: source.Spec{URL: "flaky:cam0", Backoff: source.Backoff{Initial: 200 * time.Millisecond}}}
	e := newTestEngine(t, []Spec{spec}, nil)
	sub := e.Subscribe(1000)
	defer sub.Cancel()
	run(t, e)
	var backoff *Event
	timeout := time.After(20 * time.Second * testenv.Slowdown())
	for backoff == nil {
		select {
		case ev := <-sub.C:
			if ev.Type == SourceState && ev.Source.Phase == source.PhaseBackoff {
				backoff = &ev
			}
		case <-timeout:
			t.Fatal("no backoff state within 20 s")
		}
	}
	if !strings.Contains(backoff.Source.Reason, "frame 37") || backoff.Source.Failures != 1 || backoff.Source.Retry.IsZero() {
		t.Errorf("backoff state %+v: want the reason, one failure, a retry time", backoff.Source)
	}
	st, _ := e.PipelineStats("cam")
	if st.Source.Phase != source.PhaseBackoff || !strings.Contains(st.Source.Reason, "frame 37") {
		t.Errorf("stats during back-off show %+v", st.Source)
	}
	before := st.FramesOut
	if st.FramesIn != 36 {
		t.Errorf("%d frames captured before the failure, want 36", st.FramesIn)
	}
	waitFor(t, 10*time.Second, "the pipeline to resume", func() bool {
		s, _ := e.PipelineStats("cam")
		return s.Source.Phase == source.PhaseStreaming && s.FramesOut > before+20
	})
	st, _ = e.PipelineStats("cam")
	if st.Source.Reconnects != 1 || st.Source.Failures != 0 {
		t.Errorf("after resuming: %+v, want 1 reconnect and the failures reset", st.Source)
	}
}

// TestReloadSharesModelAndLeaksNothing: two pipelines share one model;
// reloading, changing and stopping them loads no model again, keeps an
// unchanged camera open, and leaves no goroutine behind.
func TestReloadSharesModelAndLeaksNothing(t *testing.T) {
	model := testenv.Model(t, "yolox_nano.onnx")
	mk := func(name string, threshold float64) Spec {
		return Spec{Name: name, Source: source.Spec{URL: "counting:" + name},
			Detect: &DetectSpec{Model: model, Threshold: threshold}, Motion: &MotionSpec{},
			Actions: []ActionSpec{{Type: "log"}}}
	}
	e := newTestEngine(t, []Spec{mk("a", 0.3), mk("b", 0.3)}, nil)
	if e.DetectorLoads() != 1 || e.DetectorsOpen() != 1 {
		t.Fatalf("two pipelines on one model: %d loads, %d open; want 1", e.DetectorLoads(), e.DetectorsOpen())
	}
	base := settledGoroutines() // the database's opener is already there
	watch, cancelWatch, _ := e.Watch("a", 0)
	stop := run(t, e)
	progress := func(name string) {
		t.Helper()
		s0, _ := e.PipelineStats(name)
		waitFor(t, 10*time.Second, name+" to process frames", func() bool {
			s, _ := e.PipelineStats(name)
			return s.FramesOut > s0.FramesOut+5 && s.Running
		})
	}
	progress("a")
	progress("b")
	select {
	case f := <-watch:
		if len(f.Data) < 1000 || f.Data[0] != 0xFF || f.Data[1] != 0xD8 {
			t.Errorf("watched frame is not a JPEG (%d bytes)", len(f.Data))
		}
	case <-time.After(5 * time.Second * testenv.Slowdown()):
		t.Error("no frame for the viewer")
	}
	opens := countingOpens.Load()
	b := e.instance("b")

	if err := e.Reload(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	progress("a")
	if err := e.Apply(t.Context(), []Spec{mk("a", 0.5), mk("b", 0.3)}); err != nil {
		t.Fatal(err)
	}
	progress("a")
	if e.instance("b") != b {
		t.Error("applying a change to a reloaded b, which did not change")
	}
	if err := e.Stop(t.Context(), "b"); err != nil {
		t.Fatal(err)
	}
	if s, _ := e.PipelineStats("b"); s.Running {
		t.Error("b still running after Stop")
	}
	if err := e.Start(t.Context(), "b"); err != nil {
		t.Fatal(err)
	}
	progress("b")
	if n := e.DetectorLoads(); n != 1 {
		t.Errorf("the model was loaded %d times, want once", n)
	}
	if n := countingOpens.Load() - opens; n != 1 {
		t.Errorf("the cameras were opened %d more times; want 1 (b after Stop/Start; a's reloads keep its camera)", n)
	}
	cancelWatch()
	stop()
	if e.DetectorsOpen() != 0 {
		t.Errorf("%d detectors open after the engine stopped", e.DetectorsOpen())
	}
	if n := settledGoroutines(); n > base {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines after stopping, %d before: leaked\n%s", n, base, buf[:runtime.Stack(buf, true)])
	}
}

// TestBadSpecsChangeNothing: bad specs fail with the field named, and the
// running pipeline keeps running untouched.
func TestBadSpecsChangeNothing(t *testing.T) {
	good := Spec{Name: "good", Source: source.Spec{URL: "testpattern:", FPS: 50}}
	e := newTestEngine(t, []Spec{good}, nil)
	run(t, e)
	waitFor(t, 10*time.Second, "good to run", func() bool { s, _ := e.PipelineStats("good"); return s.FramesOut > 3 })
	in := e.instance("good")
	model := testenv.Model(t, "yolox_nano.onnx")
	for _, tc := range []struct {
		name string
		bad  Spec
		want string
	}{
		{"unknown scheme", Spec{Name: "x", Source: source.Spec{URL: "ftp://cam/1"}},
			`pipeline "x": source.url: unknown scheme "ftp"`},
		{"2-point polygon", Spec{Name: "x", Source: good.Source, Zones: []ZoneSpec{{Name: "z", Polygon: [][]float64{{0, 0}, {1, 1}}}}},
			`pipeline "x": zones[0].polygon: want at least 3 points, got 2`},
		{"threshold 1.5", Spec{Name: "x", Source: good.Source, Detect: &DetectSpec{Model: model, Threshold: 1.5}},
			`pipeline "x": detect.threshold: 1.5: want a score in (0, 1]`},
		{"unknown model", Spec{Name: "x", Source: good.Source, Detect: &DetectSpec{Model: "people-v2"}},
			`pipeline "x": detect.model: unknown model "people-v2"`},
		{"missing model file", Spec{Name: "x", Source: good.Source, Detect: &DetectSpec{Model: "/nonexistent/m.onnx"}},
			`pipeline "x": detect.model: open /nonexistent/m.onnx`},
		{"duplicate name", Spec{Name: "good", Source: good.Source}, `pipelines[1].name: "good" is already the name of pipelines[0]`},
		{"unknown action", Spec{Name: "x", Source: good.Source, Actions: []ActionSpec{{Type: "sms"}}}, `pipeline "x": actions[0].type: unknown action "sms"`},
		{"webhook without url", Spec{Name: "x", Source: good.Source, Actions: []ActionSpec{{Type: "webhook"}}}, `pipeline "x": actions[0].url: must be set`},
		{"hub without hub", Spec{Name: "x", Source: good.Source, Actions: []ActionSpec{{Type: "hub"}}}, `pipeline "x": actions[0].type: no in-process hub`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := e.Apply(t.Context(), []Spec{good, tc.bad})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if !fault.Is(err, fault.Invalid) {
				t.Errorf("error kind %q, want invalid", fault.KindOf(err))
			}
			if e.instance("good") != in || len(e.Specs()) != 1 {
				t.Error("a rejected set of specs changed the running pipelines")
			}
		})
	}
	s0, _ := e.PipelineStats("good")
	waitFor(t, 5*time.Second, "good to go on", func() bool { s, _ := e.PipelineStats("good"); return s.FramesOut > s0.FramesOut+3 })
}

// fakeLine records the values a gpio action sets.
type fakeLine struct {
	vals   chan int
	closed atomic.Bool
}

func (l *fakeLine) SetValue(v int) error { l.vals <- v; return nil }
func (l *fakeLine) Close() error         { l.closed.Store(true); return nil }

func TestGPIOAction(t *testing.T) {
	line := &fakeLine{vals: make(chan int, 10)}
	var opened string
	open := func(chip string, offset int, activeLow bool) (GPIOLine, error) {
		opened = fmt.Sprintf("%s/%d/%v", chip, offset, activeLow)
		return line, nil
	}
	a := newGPIOAction(ActionSpec{Type: "gpio", Chip: "gpiochip2", Line: 17, Pulse: 30 * time.Millisecond, ActiveLow: true}, open)
	t0 := time.Now()
	if err := a.do(t.Context(), &Event{Type: ZoneEnter}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d < 30*time.Millisecond {
		t.Errorf("pulse lasted %s, want 30ms", d)
	}
	if opened != "gpiochip2/17/true" {
		t.Errorf("opened %s", opened)
	}
	if v1, v0 := <-line.vals, <-line.vals; v1 != 1 || v0 != 0 {
		t.Errorf("line set to %d then %d, want 1 then 0", v1, v0)
	}
	a.close()
	if !line.closed.Load() {
		t.Error("line not released")
	}
	// The real opener on a machine without the chip: a clear error.
	if _, err := OpenGPIOLine("gpiochip99", 1, false); err == nil || !strings.Contains(err.Error(), "gpiochip99") {
		t.Errorf("opening a missing chip: %v", err)
	}
}

// TestApplyKeepsEquivalentSpec: a spec that differs from the running one
// only by empty lists against none (as a deployment's JSON and ledge.yaml
// may write it) leaves the pipeline running untouched, as the plan says;
// a changed action password reloads it.
func TestApplyKeepsEquivalentSpec(t *testing.T) {
	spec := Spec{Name: "p", Source: source.Spec{URL: "testpattern:", FPS: 50},
		Actions: []ActionSpec{{Type: "webhook", URL: "http://127.0.0.1:1/hook"}}}
	e := newTestEngine(t, []Spec{spec}, nil)
	run(t, e)
	before := e.instance("p")
	same := spec
	same.Zones, same.Events.Types = []ZoneSpec{}, []string{}
	same.Actions = []ActionSpec{{Type: "webhook", URL: "http://127.0.0.1:1/hook", On: []string{}, Headers: map[string]string{}}}
	if err := e.Apply(t.Context(), []Spec{same}); err != nil {
		t.Fatal(err)
	}
	if e.instance("p") != before {
		t.Error("an equivalent spec reloaded the pipeline")
	}
	changed := spec
	changed.Actions = []ActionSpec{{Type: "webhook", URL: "http://127.0.0.1:1/hook", Password: "new"}}
	if err := e.Apply(t.Context(), []Spec{changed}); err != nil {
		t.Fatal(err)
	}
	if e.instance("p") == before {
		t.Error("a new action password did not reload the pipeline")
	}
}

// TestCaptureTimeExcludesFrameWait: a test pattern at 5 fps draws a frame
// in a few milliseconds; the capture stage shows that, not the 200 ms its
// read waits for the next frame (reported apart as frame_wait).
func TestCaptureTimeExcludesFrameWait(t *testing.T) {
	e := newTestEngine(t, []Spec{{Name: "slow", Source: source.Spec{URL: "testpattern:", FPS: 5}}}, nil)
	run(t, e)
	var st Stats
	waitFor(t, 10*time.Second, "6 frames", func() bool {
		st = e.Stats()[0]
		return st.Latency[StageCapture].Count >= 6
	})
	interval := 200 * time.Millisecond
	if c := st.Latency[StageCapture]; c.P50 >= interval/2 {
		t.Errorf("capture p50 %s at 5 fps, want the drawing time (well under the %s frame interval)", c.P50, interval)
	}
	if w := st.Latency[StageFrameWait]; w.Count == 0 || w.P50 < interval/2 {
		t.Errorf("frame_wait %+v at 5 fps, want p50 near the %s frame interval", w, interval)
	}
}

// TestCaptureToDetectionCountsDetectedFrames: capture_to_detection (the
// time a Live badge shows for a pipeline with a model) counts the frames
// the detector ran on, and only those; capture_to_result counts every
// processed frame. With the detector on every third frame, the first has
// as many samples as the detect stage and at most a third of the second's.
func TestCaptureToDetectionCountsDetectedFrames(t *testing.T) {
	spec := Spec{Name: "every3", Source: source.Spec{URL: "testpattern:", FPS: 30, Width: 320, Height: 240},
		Detect: &DetectSpec{Model: testenv.Model(t, "fastestdet.onnx"), Every: 3}}
	e := newTestEngine(t, []Spec{spec}, nil)
	stop := run(t, e)
	waitFor(t, 30*time.Second, "30 processed frames", func() bool { return e.Stats()[0].FramesOut >= 30 })
	stop()
	st := e.Stats()[0]
	det, c2d, c2r := st.Latency[StageDetect].Count, st.Latency[StageCaptureToDetection].Count, st.Latency[StageCaptureToResult].Count
	t.Logf("frames out %d, detect %d, capture_to_detection %d, capture_to_result %d", st.FramesOut, det, c2d, c2r)
	if st.DetectErrors != 0 || c2d != det {
		t.Errorf("capture_to_detection has %d samples, the detector ran %d times (%d errors): want one per detection", c2d, det, st.DetectErrors)
	}
	if c2r != st.FramesOut {
		t.Errorf("capture_to_result has %d samples for %d processed frames", c2r, st.FramesOut)
	}
	if c2d == 0 || c2d > (c2r+2)/3+1 {
		t.Errorf("capture_to_detection has %d samples for %d frames detected on every third: want some, and at most a third", c2d, c2r)
	}
}
