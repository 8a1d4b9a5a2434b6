package appliance

import (
	"context"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestAppRunsPipelines: the pipelines of ledge.yaml run, their metrics are
// on /metrics, and a pipeline without a detector does not load ONNX
// Runtime.
func TestAppRunsPipelines(t *testing.T) {
	cfg, err := ParseConfig("ledge.yaml", []byte(`
pipelines:
  - name: pattern
    source: {url: "testpattern:", fps: 30, width: 320, height: 240}
    motion: {}
`))
	if err != nil {
		t.Fatal(err)
	}
	base := testConfig(t)
	cfg.DataDir, cfg.DeviceID, cfg.HTTP, cfg.Hub.Listen = base.DataDir, base.DeviceID, base.HTTP, base.Hub.Listen
	cfg.HTTP.PublicMetrics = true
	app, err := New(t.Context(), cfg, BuildInfo{Version: "test"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()
	re := regexp.MustCompile(`ledge_pipeline_frames_total\{kind="out",pipeline="pattern"\} (\d+)`)
	deadline := time.Now().Add(10 * time.Second)
	for {
		m := re.FindStringSubmatch(get(t, "http://"+app.webAddr()+"/metrics", 200))
		if m != nil {
			if n, _ := strconv.Atoi(m[1]); n >= 5 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no processed frames of pipeline pattern on /metrics within 10 s (match %v)", m)
		}
		time.Sleep(50 * time.Millisecond)
	}
	metrics := get(t, "http://"+app.webAddr()+"/metrics", 200)
	for _, want := range []string{`ledge_pipeline_running{pipeline="pattern"} 1`, `ledge_pipeline_source_phase{phase="streaming",pipeline="pattern"} 1`,
		`ledge_pipeline_stage_latency_seconds{pipeline="pattern",stage="motion",quantile="0.99"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	maps, _ := os.ReadFile("/proc/self/maps")
	if strings.Contains(string(maps), "libonnxruntime") {
		t.Error("ONNX Runtime is loaded though no pipeline detects")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestConfigPipelineErrors(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"pipelines:\n  - name: a\n    source: {url: \"ftp://x\"}\n", `pipeline "a": source.url: unknown scheme "ftp"`},
		{"pipelines:\n  - name: a\n    source: {url: \"testpattern:\"}\n    detect: {model: m.onnx, threshold: 1.5}\n", `pipeline "a": detect.threshold`},
		{"pipelines:\n  - name: a\n    source: {url: \"testpattern:\"}\n    zonez: []\n", `line 4: pipelines[0].zonez: unknown key "zonez" (did you mean "zones"?)`},
		{"pipeline:\n  eventLog: {maxAge: -1h}\n", "pipeline.eventLog.maxAge"},
	} {
		if _, err := ParseConfig("ledge.yaml", []byte(tc.doc)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.doc, err, tc.want)
		}
	}
}
