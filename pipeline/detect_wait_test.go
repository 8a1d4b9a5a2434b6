package pipeline

import (
	"strings"
	"sync"
	"testing"
	"time"

	"ledge/internal/fault"
	"ledge/internal/testenv"
)

// pendingStore knows the name "people" but has no version of it until
// ready is called.
type pendingStore struct {
	mu sync.Mutex
	m  *ResolvedModel
}

func (s *pendingStore) Resolve(name string) (ResolvedModel, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case name != "people":
		return ResolvedModel{}, fault.New(fault.NotFound, "%w %q", ErrUnknownModel, name)
	case s.m == nil:
		return ResolvedModel{}, fault.New(fault.Unavailable, "%w: people@1 is downloading (12%%)", ErrModelNotReady)
	}
	return *s.m, nil
}

// TestPipelineWaitsForItsModel: a pipeline on a model name whose first
// version is still on its way runs without detection; a ModelSwap brings
// the model in between two frames, and detection starts. A name nobody knows
// is still an error.
func TestPipelineWaitsForItsModel(t *testing.T) {
	st := &pendingStore{}
	spec := Spec{Name: "wait", Source: sourceSpec(video(t, panVideo)), Detect: &DetectSpec{Model: "people", Classes: []string{"person"}}}
	spec.Source.Loop = true
	e := newTestEngine(t, []Spec{spec}, func(o *Options) { o.Models = st })
	results, cancel, _ := e.Results("wait", 5000)
	defer cancel()
	run(t, e)
	waitFor(t, 20*time.Second, "frames without a model", func() bool { s, _ := e.PipelineStats("wait"); return s.FramesOut > 20 })
	s, _ := e.PipelineStats("wait")
	if s.Model != "people" || s.ModelVersion != "" || s.DetectErrors != 0 || e.DetectorsOpen() != 0 {
		t.Errorf("waiting: model %q version %q, %d detect errors, %d detectors", s.Model, s.ModelVersion, s.DetectErrors, e.DetectorsOpen())
	}
	// It says why, as the store does (not that the name is missing).
	if s.State != StateWaiting || !strings.Contains(s.Reason, "people@1 is downloading (12%)") {
		t.Errorf("waiting: state %s, reason %q: want the store's reason", s.State, s.Reason)
	}

	m := ResolvedModel{Path: testenv.Model(t, "yolox_nano.onnx"), Kind: "yolox", Version: "1"}
	sw, err := e.PrepareModel(t.Context(), "people", m)
	if err != nil || len(sw.Pipelines()) != 1 {
		t.Fatalf("prepare the first version: %v, %v", sw, err)
	}
	st.mu.Lock()
	st.m = &m
	st.mu.Unlock()
	sw.Commit()
	s0, _ := e.PipelineStats("wait")
	waitFor(t, 20*time.Second, "frames on the model", func() bool { s, _ := e.PipelineStats("wait"); return s.FramesOut > s0.FramesOut+20 })
	cancel()
	var prev uint64
	before, after, people := 0, 0, 0
	for r := range results {
		if prev != 0 && r.Frame != prev+1 {
			t.Errorf("frame %d follows frame %d", r.Frame, prev)
		}
		prev = r.Frame
		switch {
		case r.Model == "" && !r.Detected:
			if after > 0 {
				t.Errorf("frame %d without a model after the swap", r.Frame)
			}
			before++
		case r.Model == "1" && r.Detected:
			after++
			people += len(r.Objects)
		default:
			t.Errorf("frame %d: model %q detected %v", r.Frame, r.Model, r.Detected)
		}
	}
	if before < 20 || after < 20 || people < after {
		t.Errorf("%d frames before, %d after with %d people", before, after, people)
	}

	bad := spec
	bad.Name, bad.Detect = "bad", &DetectSpec{Model: "nobody"}
	if err := e.Put(t.Context(), bad); !fault.Is(err, fault.Invalid) {
		t.Errorf("a pipeline on an unknown model name: %v", err)
	}
}
