package pipeline

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"ledge/internal/testenv"
	"ledge/pipeline/source"
)

// syncBuffer is a log sink the test reads while pipelines write to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) count(sub string) int { return strings.Count(s.String(), sub) }

func logTo(buf *syncBuffer) func(*Options) {
	return func(o *Options) {
		o.Logger = slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
}

// A pipeline whose model file is missing does not stop the others: it is
// "failed" with its reason (naming the pipeline and the file), logged once
// at WARN, and runs once the file is there.
func TestPipelineThatCannotBuildFailsAlone(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "models", "people.onnx")
	good := Spec{Name: "good", Source: source.Spec{URL: "counting:good"}}
	bad := Spec{Name: "door", Source: source.Spec{URL: "counting:door"}, Detect: &DetectSpec{Model: missing}}
	var log syncBuffer
	e := newTestEngine(t, []Spec{good, bad}, logTo(&log))
	run(t, e)
	waitFor(t, 10*time.Second, "good to run", func() bool { s, _ := e.PipelineStats("good"); return s.FramesOut > 3 })

	st, err := e.PipelineStats("door")
	if err != nil {
		t.Fatal(err)
	}
	if st.State != StateFailed || st.Running || !strings.Contains(st.Reason, "detect.model") || !strings.Contains(st.Reason, missing) || st.FailingSince.IsZero() {
		t.Fatalf("door: state %q, reason %q, since %v: want failed with the model file named", st.State, st.Reason, st.FailingSince)
	}
	if g, _ := e.PipelineStats("good"); g.State != StateRunning || g.Reason != "" {
		t.Errorf("good: state %q reason %q", g.State, g.Reason)
	}
	if n := log.count(`msg="pipeline failing"`); n != 1 || !strings.Contains(log.String(), "pipeline=door") {
		t.Errorf("%d WARNs for the failed pipeline, want 1:\n%s", n, log.String())
	}

	// Another pipeline can be added while door is failed.
	third := Spec{Name: "third", Source: source.Spec{URL: "counting:third"}}
	if err := e.Apply(t.Context(), []Spec{good, bad, third}); err != nil {
		t.Fatalf("apply beside a failed pipeline: %v", err)
	}
	// Starting it again now says why it still fails.
	if err := e.Start(t.Context(), "door"); err == nil || !strings.Contains(err.Error(), `pipeline "door"`) {
		t.Errorf("start of a still failing pipeline: %v", err)
	}
	if n := log.count(`msg="pipeline failing"`); n != 1 {
		t.Errorf("a retry logged WARN again (%d):\n%s", n, log.String())
	}

	// The model arrives: a retry brings it up, told at INFO.
	os.MkdirAll(filepath.Dir(missing), 0o755)
	data, err := os.ReadFile(testenv.Model(t, "yolox_nano.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(missing, data, 0o644)
	if err := e.Reload(t.Context(), "door"); err != nil {
		t.Fatalf("reload once the model is there: %v", err)
	}
	waitFor(t, 20*time.Second, "door to run", func() bool {
		s, _ := e.PipelineStats("door")
		return s.State == StateRunning && s.FramesOut > 3
	})
	if !strings.Contains(log.String(), `msg="pipeline recovered"`) {
		t.Errorf("no INFO on recovery:\n%s", log.String())
	}
}

// Failed pipelines are retried by themselves, with back-off.
func TestFailedPipelineRetriesByItself(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "m.onnx")
	e := newTestEngine(t, []Spec{{Name: "door", Source: source.Spec{URL: "counting:door"}, Detect: &DetectSpec{Model: missing}}}, nil)
	e.mu.Lock()
	e.failed["door"].next = time.Now().Add(time.Second) // sooner than the 10 s of a real start
	e.mu.Unlock()
	run(t, e)
	data, _ := os.ReadFile(testenv.Model(t, "yolox_nano.onnx"))
	os.WriteFile(missing, data, 0o644)
	waitFor(t, 20*time.Second, "door to run", func() bool { s, _ := e.PipelineStats("door"); return s.State == StateRunning })
}

// dies is a test camera that fails at frame 37 on its first connection,
// counted per URL (flaky counts across the package).
var diesOpens sync.Map

func init() {
	source.Register("dies", func(ctx context.Context, s source.Spec, t source.Target) (source.Reader, error) {
		n, _ := diesOpens.LoadOrStore(t.Path, new(atomic.Int64))
		return &flaky{conn: int(n.(*atomic.Int64).Add(1))}, nil
	})
}

// A camera that fails shows "backoff" with its reason, and the log says it
// once (WARN), then that it recovered (INFO).
func TestSourceFailureLoggedOnce(t *testing.T) {
	var log syncBuffer
	spec := Spec{Name: "cam", Source: source.Spec{URL: "dies:cam1", Backoff: source.Backoff{Initial: 300 * time.Millisecond}}}
	e := newTestEngine(t, []Spec{spec}, logTo(&log))
	run(t, e)
	waitFor(t, 20*time.Second, "the back-off", func() bool { s, _ := e.PipelineStats("cam"); return s.State == StateBackoff })
	st, _ := e.PipelineStats("cam")
	if !strings.Contains(st.Reason, "frame 37") || st.FailingSince.IsZero() {
		t.Errorf("backoff: reason %q since %v", st.Reason, st.FailingSince)
	}
	waitFor(t, 20*time.Second, "the recovery", func() bool { s, _ := e.PipelineStats("cam"); return s.State == StateRunning })
	waitFor(t, 5*time.Second, "the INFO line", func() bool { return log.count(`msg="pipeline source recovered"`) == 1 })
	if n := log.count(`msg="pipeline source failing"`); n != 1 || !strings.Contains(log.String(), "frame 37") {
		t.Errorf("%d WARNs, want 1 with the reason:\n%s", n, log.String())
	}
}

// Stopping a failed pipeline is not a recovery: no INFO.
func TestStoppedFailedPipelineIsNoRecovery(t *testing.T) {
	var log syncBuffer
	spec := Spec{Name: "door", Source: source.Spec{URL: "counting:door2"}, Detect: &DetectSpec{Model: filepath.Join(t.TempDir(), "m.onnx")}}
	e := newTestEngine(t, []Spec{spec}, logTo(&log))
	run(t, e)
	if err := e.Stop(t.Context(), "door"); err != nil {
		t.Fatal(err)
	}
	if st, _ := e.PipelineStats("door"); st.State != StateStopped {
		t.Errorf("stopped failed pipeline: state %q", st.State)
	}
	if strings.Contains(log.String(), "recovered") {
		t.Errorf("a stop logged as a recovery:\n%s", log.String())
	}
	// Starting it while its model is still missing says why, and changes
	// nothing.
	if err := e.Start(t.Context(), "door"); err == nil || !strings.Contains(err.Error(), `pipeline "door": detect.model`) {
		t.Errorf("start: %v", err)
	}
	if st, _ := e.PipelineStats("door"); st.State != StateStopped {
		t.Errorf("after a refused start: state %q", st.State)
	}
}
