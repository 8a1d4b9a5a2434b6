package pipeline

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"ledge/internal/fault"
	"ledge/internal/testenv"
)

// store is a model resolver whose answer the test changes.
type store struct {
	mu sync.Mutex
	m  ResolvedModel
}

func (s *store) Resolve(name string) (ResolvedModel, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if name != "people" {
		return ResolvedModel{}, fault.New(fault.NotFound, "%w %q", ErrUnknownModel, name)
	}
	return s.m, nil
}

func (s *store) set(m ResolvedModel) { s.mu.Lock(); s.m = m; s.mu.Unlock() }

// TestSwapModel: a pipeline on a model name switches from YOLOX-nano to
// FastestDet between two frames: no frame is skipped, the frames before
// carry the old version and the ones after the new, and detections go on.
// A model that cannot serve is not swapped in, and an aborted swap
// changes nothing.
func TestSwapModel(t *testing.T) {
	models := &store{m: ResolvedModel{Path: testenv.Model(t, "yolox_nano.onnx"), Kind: "yolox", Version: "yolox@1"}}
	spec := Spec{Name: "swap", Source: sourceSpec(video(t, panVideo)), Detect: &DetectSpec{Model: "people", Classes: []string{"person"}}}
	spec.Source.Loop = true
	e := newTestEngine(t, []Spec{spec}, func(o *Options) { o.Models = models })
	results, cancel, _ := e.Results("swap", 5000)
	defer cancel()
	run(t, e)
	waitFor(t, 20*time.Second, "frames on the first model", func() bool { s, _ := e.PipelineStats("swap"); return s.FramesOut > 30 })

	// A broken model: not swapped in, the old one keeps serving.
	broken := ResolvedModel{Path: testenv.Model(t, "coco80.txt"), Kind: "yolox", Version: "broken@2"}
	if sw, err := e.PrepareModel(t.Context(), "people", broken); err == nil || !fault.Is(err, fault.Invalid) ||
		!strings.HasPrefix(err.Error(), "pipeline swap: model people@broken@2: ") {
		t.Errorf("preparing a text file: %v, %v: want an Invalid error naming the pipeline and the version", sw, err)
	}
	// Prepared, then aborted: nothing changes.
	fd := ResolvedModel{Path: testenv.Model(t, "fastestdet.onnx"), Kind: "fastestdet", Version: "fastestdet@3"}
	sw, err := e.PrepareModel(t.Context(), "people", fd)
	if err != nil {
		t.Fatal(err)
	}
	sw.Abort()
	if e.DetectorsOpen() != 1 {
		t.Errorf("%d detectors open after an abort, want the old one", e.DetectorsOpen())
	}
	s0, _ := e.PipelineStats("swap")
	waitFor(t, 20*time.Second, "frames after the abort", func() bool { s, _ := e.PipelineStats("swap"); return s.FramesOut > s0.FramesOut+10 })
	// Prepared, recorded by the store, committed.
	sw, err = e.PrepareModel(t.Context(), "people", fd)
	if err != nil || !slices.Equal(sw.Pipelines(), []string{"swap"}) {
		t.Fatalf("prepare: %v, %v", sw, err)
	}
	models.set(fd)
	sw.Commit()
	s0, _ = e.PipelineStats("swap")
	waitFor(t, 20*time.Second, "frames on the new model", func() bool { s, _ := e.PipelineStats("swap"); return s.FramesOut > s0.FramesOut+30 })
	if s, _ := e.PipelineStats("swap"); s.ModelVersion != "fastestdet@3" {
		t.Errorf("stats show model %s", s.ModelVersion)
	}
	cancel()
	var prev uint64
	switches, after, people := 0, 0, 0
	last := ""
	for r := range results {
		if prev != 0 && r.Frame != prev+1 {
			t.Errorf("frame %d follows frame %d: a gap", r.Frame, prev)
		}
		prev = r.Frame
		if r.Model != last {
			if last != "" {
				switches++
				if last != "yolox@1" || r.Model != "fastestdet@3" {
					t.Errorf("switch from %s to %s at frame %d", last, r.Model, r.Frame)
				}
			}
			last = r.Model
		}
		if r.Model == "fastestdet@3" {
			after++
			people += len(r.Objects)
		}
	}
	if switches != 1 || after < 30 || people < after {
		t.Errorf("%d switches, %d frames on the new model with %d people: want one switch and people in every frame", switches, after, people)
	}
	if e.DetectorsOpen() != 1 {
		t.Errorf("%d detectors open, want the new one only", e.DetectorsOpen())
	}
}
