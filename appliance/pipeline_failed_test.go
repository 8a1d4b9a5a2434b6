package appliance

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ledge/pipeline"
	"ledge/pipeline/source"
)

// One broken pipeline does not stop ledge: a ledge.yaml pipeline whose
// model file is missing, a stored (dashboard) pipeline whose model was
// deleted and a stored spec that no longer reads each show as failed with
// a reason, and the rest runs.
func TestAppStartsBesideBrokenPipelines(t *testing.T) {
	cfg := testConfig(t)
	dir := t.TempDir()
	cfg.Pipelines = []pipeline.Spec{
		{Name: "ok", Source: sourceSpec("testpattern:")},
		{Name: "door", Source: sourceSpec("testpattern:"), Detect: &pipeline.DetectSpec{Model: filepath.Join(dir, "door.onnx")}},
	}
	// Stored by an earlier run from the dashboard.
	{
		first, err := New(t.Context(), testConfigIn(t, cfg.DataDir), BuildInfo{}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		for name, spec := range map[string]string{
			"yard":   `{"name":"yard","source":{"url":"testpattern:"},"detect":{"model":"` + filepath.Join(dir, "deleted.onnx") + `"}}`,
			"garage": `{"name":"garage","source":{"url":"testpattern:"},"zonez":[]}`,
		} {
			if _, err := first.db.Exec(`INSERT INTO appliance_pipelines (name, spec, updated_at) VALUES (?, ?, ?)`, name, spec, time.Now().UTC().Format(time.RFC3339)); err != nil {
				t.Fatal(err)
			}
		}
		first.Close()
	}
	app, _ := startApp(t, cfg)
	api := pipelinesAPI{eng: app.pipelines, set: app.pipelineSet}
	waitUntil(t, 10*time.Second, "pipeline ok to run", func() bool {
		st, _ := app.pipelines.PipelineStats("ok")
		return st.State == pipeline.StateRunning
	})
	list, err := api.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(list)
	var views []struct {
		Name, State, Reason, Owner string
	}
	json.Unmarshal(data, &views)
	got := map[string]string{}
	for _, v := range views {
		got[v.Name] = v.State + ": " + v.Reason
	}
	for name, want := range map[string][]string{
		"ok":     {"running: "},
		"door":   {"failed: ", "detect.model", "door.onnx"},
		"yard":   {"failed: ", "deleted.onnx"},
		"garage": {"failed: ", "zonez", "DELETE /api/v1/pipelines/garage"},
	} {
		for _, w := range want {
			if !strings.Contains(got[name], w) {
				t.Errorf("%s: %q, want %q in it", name, got[name], w)
			}
		}
	}
	// The unreadable one can be deleted through the API that now runs.
	if err := api.Delete(context.Background(), "garage"); err != nil {
		t.Fatalf("delete the broken stored pipeline: %v", err)
	}
	if _, err := api.Get(context.Background(), "garage"); err == nil {
		t.Error("garage still listed after its deletion")
	}
}

func sourceSpec(url string) source.Spec { return source.Spec{URL: url} }

// testConfigIn is testConfig with a given data dir.
func testConfigIn(t *testing.T, dataDir string) Config {
	cfg := testConfig(t)
	cfg.DataDir = dataDir
	return cfg
}
