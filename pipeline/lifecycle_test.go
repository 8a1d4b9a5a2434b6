package pipeline

import (
	"context"
	"fmt"
	"runtime"
	"strings"

	"testing"
	"time"

	"gocv.io/x/gocv"

	"ledge/internal/fault"
	"ledge/internal/testenv"
	"ledge/pipeline/source"
)

// stuck is a test camera whose first connection under a URL that ends in
// "hang" does not close until stuckRelease is closed: a camera driver that
// hangs on close, which no real camera does on demand. Closing any other
// one is reported on stuckClosed.
type stuck struct {
	flaky
	url string
}

var (
	stuckRelease = make(chan struct{})
	stuckClosed  = make(chan string, 100)
)

func init() {
	source.Register("stuck", func(ctx context.Context, s source.Spec, t source.Target) (source.Reader, error) {
		return &stuck{flaky: flaky{conn: 2}, url: s.URL}, nil
	})
}

func (s *stuck) Read(ctx context.Context, dst *gocv.Mat) (time.Time, error) {
	return s.flaky.Read(ctx, dst)
}

func (s *stuck) Close() error {
	if strings.HasSuffix(s.url, "hang") {
		<-stuckRelease
		return nil
	}
	stuckClosed <- s.url
	return nil
}

// TestReplacedPipelinesStopTogether: when an Apply replaces two pipelines
// and the first one's camera hangs on close, the second one's old camera
// is closed all the same (the old instances stop together), and Apply
// returns once both have.
func TestReplacedPipelinesStopTogether(t *testing.T) {
	stuckRelease = make(chan struct{}) // before any camera of this test opens
	specs := []Spec{{Name: "a", Source: source.Spec{URL: "stuck:a-hang"}}, {Name: "b", Source: source.Spec{URL: "stuck:b"}}}
	e := newTestEngine(t, specs, nil)
	run(t, e)
	for _, n := range []string{"a", "b"} {
		waitFor(t, 10*time.Second, n+" to run", func() bool { s, _ := e.PipelineStats(n); return s.FramesOut > 3 })
	}
	next := []Spec{{Name: "a", Source: source.Spec{URL: "stuck:a2"}}, {Name: "b", Source: source.Spec{URL: "stuck:b2"}}}
	done := make(chan error, 1)
	go func() { done <- e.Apply(context.Background(), next) }()
	select {
	case url := <-stuckClosed:
		if url != "stuck:b" {
			t.Errorf("closed %s, want b's old camera", url)
		}
	case <-time.After(20 * time.Second * testenv.Slowdown()):
		t.Error("b's old camera was not closed while a's hung: the replaced pipelines stop one after another")
	}
	select {
	case err := <-done:
		t.Fatalf("Apply returned (%v) before a's old camera closed", err)
	default:
	}
	close(stuckRelease)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestChangesGiveUpWithTheirContext: a change that waits for another (a
// model swap prepared and not committed yet) gives up when its context
// ends, with a timeout error, and changes nothing.
func TestChangesGiveUpWithTheirContext(t *testing.T) {
	models := &store{m: ResolvedModel{Path: testenv.Model(t, "yolox_nano.onnx"), Kind: "yolox", Version: "1"}}
	spec := Spec{Name: "p", Source: source.Spec{URL: "testpattern:", FPS: 20}, Detect: &DetectSpec{Model: "people"}}
	e := newTestEngine(t, []Spec{spec}, func(o *Options) { o.Models = models })
	run(t, e)
	sw, err := e.PrepareModel(t.Context(), "people", ResolvedModel{Path: testenv.Model(t, "fastestdet.onnx"), Kind: "fastestdet", Version: "2"})
	if err != nil {
		t.Fatal(err)
	}
	other := Spec{Name: "q", Source: source.Spec{URL: "testpattern:", FPS: 20}}
	for name, change := range map[string]func(ctx context.Context) error{
		"Put":          func(ctx context.Context) error { return e.Put(ctx, other) },
		"Apply":        func(ctx context.Context) error { return e.Apply(ctx, []Spec{spec, other}) },
		"Stop":         func(ctx context.Context) error { return e.Stop(ctx, "p") },
		"Reload":       func(ctx context.Context) error { return e.Reload(ctx, "p") },
		"Remove":       func(ctx context.Context) error { return e.Remove(ctx, "p") },
		"PrepareModel": func(ctx context.Context) error { _, err := e.PrepareModel(ctx, "people", models.m); return err },
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		err := change(ctx)
		cancel()
		if !fault.Is(err, fault.Timeout) {
			t.Errorf("%s while a model swap is prepared: %v, want a timeout", name, err)
		}
	}
	if specs := e.Specs(); len(specs) != 1 || specs[0].Disabled {
		t.Errorf("specs after the abandoned changes: %+v", specs)
	}
	sw.Abort()
	if err := e.Put(t.Context(), other); err != nil {
		t.Errorf("Put after the swap ended: %v", err)
	}
}

// TestEngineLeavesNothing builds, runs, changes and stops an engine again
// and again: no goroutine outlives it, and the slots of removed pipelines
// are forgotten.
func TestEngineLeavesNothing(t *testing.T) {
	db := testenv.DB(t)
	model := testenv.Model(t, "yolox_nano.onnx")
	base := settledGoroutines()
	for i := range 4 {
		specs := []Spec{
			{Name: "pattern", Source: source.Spec{URL: "testpattern:", FPS: 50}, Motion: &MotionSpec{},
				Actions: []ActionSpec{{Type: "webhook", URL: "http://127.0.0.1:1/hook"}, {Type: "log"}}},
			{Name: "detect", Source: source.Spec{URL: "counting:x", FPS: 50}, Detect: &DetectSpec{Model: model},
				Actions: []ActionSpec{{Type: "snapshot"}}},
			{Name: "broken", Source: source.Spec{URL: "testpattern:"}, Detect: &DetectSpec{Model: "/nowhere/model.onnx"}},
		}
		e := newTestEngine(t, specs, func(o *Options) { o.DB = db })
		stop := run(t, e)
		waitFor(t, 20*time.Second, "frames", func() bool {
			a, _ := e.PipelineStats("pattern")
			b, _ := e.PipelineStats("detect")
			return a.FramesOut > 3 && b.FramesOut > 3
		})
		frames, cancelWatch, _ := e.Watch("pattern", 0)
		results, cancelResults, _ := e.Results("detect", 10)
		<-frames
		<-results
		if err := e.Put(t.Context(), Spec{Name: fmt.Sprint("extra", i), Source: source.Spec{URL: "testpattern:"}}); err != nil {
			t.Fatal(err)
		}
		if err := e.Apply(t.Context(), specs[:2]); err != nil { // "extra" and "broken" go
			t.Fatal(err)
		}
		e.mu.Lock()
		nslots := len(e.slots)
		e.mu.Unlock()
		if nslots != 2 {
			t.Errorf("round %d: %d slots for 2 pipelines", i, nslots)
		}
		cancelWatch()
		cancelResults()
		stop()
		if e.DetectorsOpen() != 0 {
			t.Errorf("round %d: %d detectors open after stop", i, e.DetectorsOpen())
		}
	}
	if n := settledGoroutines(); n > base {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines after 4 engines, %d before: leaked\n%s", n, base, buf[:runtime.Stack(buf, true)])
	}
}
