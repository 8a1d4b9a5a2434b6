package appliance

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"ledge/agent"
	"ledge/internal/testenv"
	"ledge/models"
	"ledge/pipeline"
)

// resultLog collects a pipeline's per-frame results as they come.
type resultLog struct {
	mu   sync.Mutex
	all  []pipeline.Result
	done chan struct{}
}

func collectResults(t *testing.T, eng *pipeline.Engine, name string) (*resultLog, func()) {
	t.Helper()
	ch, cancel, err := eng.Results(name, 20000)
	if err != nil {
		t.Fatal(err)
	}
	l := &resultLog{done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for r := range ch {
			l.mu.Lock()
			l.all = append(l.all, r)
			l.mu.Unlock()
		}
	}()
	return l, func() { cancel(); <-l.done }
}

// framesOn counts the frames that carry version v since frame from.
func (l *resultLog) framesOn(v string, from int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.all[min(from, len(l.all)):] {
		if r.Model == v {
			n++
		}
	}
	return n
}

func (l *resultLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.all)
}

// segment is a run of consecutive frames on one model version.
type segment struct {
	version       string
	first, last   uint64
	frames, found int // frames, and frames with at least one person
}

// segments checks that frame numbers follow each other with no gap and
// cuts the stream where the model version changes.
func (l *resultLog) segments(t *testing.T) []segment {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []segment
	for i, r := range l.all {
		if i > 0 && r.Frame != l.all[i-1].Frame+1 {
			t.Errorf("frame %d follows frame %d: a gap", r.Frame, l.all[i-1].Frame)
		}
		if len(out) == 0 || out[len(out)-1].version != r.Model {
			out = append(out, segment{version: r.Model, first: r.Frame})
		}
		s := &out[len(out)-1]
		s.last = r.Frame
		s.frames++
		if len(r.Objects) > 0 {
			s.found++
		}
	}
	return out
}

// TestModelHotSwapUnderLoad is the acceptance test of issue 6. A
// deployment brings model "people" (YOLOX-nano) and a pipeline that runs
// a video through it; the pipeline starts before the model has arrived
// and detects once it is active. A second deployment switches "people" to
// FastestDet (another kind, another input size) while the pipeline runs
// full speed: frame numbers have no gap, the frames before the switch
// carry version 1 and those after it version 2, and people are found on
// both sides. A third deployment brings a corrupted file with a correct
// digest: it fails to load, is not activated, the pipeline keeps running
// on version 2 without a gap, and the deployment rolls back. `ledge models
// rollback` returns to YOLOX-nano the same way. Then ledge restarts with
// the model server gone: the active version loads from the store.
func TestModelHotSwapUnderLoad(t *testing.T) {
	testenv.Docker(t)
	dir := t.TempDir()
	video := panVideo(t, dir)
	files := map[string][]byte{}
	for _, f := range []string{"yolox_nano.onnx", "fastestdet.onnx"} {
		b, err := os.ReadFile(testenv.Model(t, f))
		if err != nil {
			t.Fatal(err)
		}
		files[f] = b
	}
	// The publisher's mistake: an upload cut short, published with the
	// digest of what was uploaded.
	files["broken.onnx"] = files["yolox_nano.onnx"][:len(files["yolox_nano.onnx"])*2/3]
	var mu sync.Mutex
	requests := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests++
		mu.Unlock()
		data, ok := files[strings.TrimPrefix(r.URL.Path, "/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, r.URL.Path, time.Unix(1700000000, 0), strings.NewReader(string(data)))
	}))
	defer srv.Close()
	digest := func(f string) string { s := sha256.Sum256(files[f]); return hex.EncodeToString(s[:]) }

	cfg := testConfig(t)
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Models.AllowHTTP = true
	cfg.Agent.Rollback.StableFor = 0
	cfg.Pipeline.Detector = pipeline.DetectorConfig{Sessions: 2, Threads: 1}
	manifest := func(version, mv, file, kind string) []byte {
		return fmt.Appendf(nil, `version: %q
models:
  - {name: people, version: %q, url: "%s/%s", sha256: %s, kind: %s}
pipelines:
  - name: cam
    source: {url: "file:%s", loop: true}
    detect: {model: people, classes: [person]}
`, version, mv, srv.URL, file, digest(file), kind, video)
	}

	app, stopApp := startApp(t, cfg)
	ctx := t.Context()
	if _, err := app.agent.Apply(ctx, manifest("1", "1", "yolox_nano.onnx", "yolox"), nil); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "pipeline cam", func() bool { _, err := app.Pipelines().Spec("cam"); return err == nil })
	log, stop := collectResults(t, app.Pipelines(), "cam")
	waitUntil(t, 60*time.Second, "60 frames on people@1", func() bool { return log.framesOn("1", 0) >= 60 })
	waitUntil(t, 30*time.Second, "deployment 1 converged", func() bool {
		rep := app.agent.Reported()
		return rep.Deployment != nil && rep.Deployment.Version == "1" && rep.Deployment.State == agent.StateConverged
	})

	// Switch to FastestDet under load.
	mark := log.len()
	if _, err := app.agent.Apply(ctx, manifest("2", "2", "fastestdet.onnx", "fastestdet"), nil); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 60*time.Second, "60 frames on people@2", func() bool { return log.framesOn("2", mark) >= 60 })
	waitUntil(t, 30*time.Second, "deployment 2 converged", func() bool {
		rep := app.agent.Reported()
		it, _ := rep.Sections["models"].Items["people"].(models.ItemStatus)
		return rep.Deployment.Version == "2" && rep.Deployment.State == agent.StateConverged && it.State == models.StateActive
	})

	// A corrupted file with a correct digest: not activated.
	mark = log.len()
	if _, err := app.agent.Apply(ctx, manifest("3", "3", "broken.onnx", "yolox"), nil); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 60*time.Second, "deployment 3 rolled back", func() bool {
		rep := app.agent.Reported()
		return rep.Deployment.Version == "2" && rep.Deployment.RolledBackFrom != nil && rep.Deployment.RolledBackFrom.Version == "3"
	})
	if reason := app.agent.Reported().Deployment.RolledBackFrom.Reason; !strings.Contains(reason, "people@3 failed: activation") {
		t.Errorf("rollback reason %q does not say the model failed to activate", reason)
	}
	m, _ := app.Models().Get(ctx, "people")
	var v3 models.Version
	for _, v := range m.Versions {
		if v.Version == "3" {
			v3 = v
		}
	}
	if m.Active != "2" || v3.State != models.StateFailed || !strings.Contains(v3.Error, "ONNX") {
		t.Errorf("after the corrupted model: active %q, version 3 %s %q", m.Active, v3.State, v3.Error)
	}
	waitUntil(t, 30*time.Second, "40 more frames on people@2", func() bool { return log.framesOn("2", mark) >= 40 })

	// ledge models rollback: back to YOLOX-nano.
	mark = log.len()
	if v, err := app.Models().Rollback(ctx, "people"); err != nil || v.Version != "1" {
		t.Fatalf("rollback: %+v %v", v, err)
	}
	waitUntil(t, 60*time.Second, "60 frames on people@1 again", func() bool { return log.framesOn("1", mark) >= 60 })
	stop()

	segs := log.segments(t)
	if len(segs) > 0 && segs[0].version == "" {
		// The pipeline came with the model's first deployment and ran
		// without detection until the model was active.
		if segs[0].found != 0 {
			t.Errorf("frames %d-%d without a model found people", segs[0].first, segs[0].last)
		}
		segs = segs[1:]
	}
	var versions []string
	for _, s := range segs {
		versions = append(versions, s.version)
		if s.frames >= 20 && s.found < s.frames*9/10 {
			t.Errorf("frames %d-%d on version %s: people found in %d of %d frames", s.first, s.last, s.version, s.found, s.frames)
		}
	}
	if strings.Join(versions, ",") != "1,2,1" {
		t.Errorf("model versions along the stream: %v, want 1, 2, 1 (no frame without a model, none on version 3)", versions)
	}
	st, _ := app.Pipelines().PipelineStats("cam")
	if st.Dropped != 0 || st.DetectErrors != 0 {
		t.Errorf("%d frames dropped, %d detect errors", st.Dropped, st.DetectErrors)
	}
	t.Logf("segments: %+v", segs)

	// Restart with no network: the active version comes from the store.
	mu.Lock()
	before := requests
	mu.Unlock()
	srv.Close()
	stopApp()
	app2, _ := startApp(t, cfg)
	waitUntil(t, 30*time.Second, "pipeline cam after the restart", func() bool { _, err := app2.Pipelines().Spec("cam"); return err == nil })
	log2, stop2 := collectResults(t, app2.Pipelines(), "cam")
	waitUntil(t, 60*time.Second, "30 frames on people@1 after an offline restart", func() bool { return log2.framesOn("1", 0) >= 30 })
	stop2()
	for _, s := range log2.segments(t) {
		if s.version != "1" || s.found == 0 {
			t.Errorf("after the restart: frames %d-%d on %q with people in %d", s.first, s.last, s.version, s.found)
		}
	}
	if st := app2.Models().Stats(); st.DownloadsStarted != 0 || requests != before {
		t.Errorf("%d downloads started offline", st.DownloadsStarted)
	}
}
