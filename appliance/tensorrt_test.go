package appliance

import (
	"log/slog"
	"path/filepath"
	"testing"
)

// inference.tensorrtCache defaults to a folder in the data dir; a relative
// path is inside the data dir, an absolute one is kept.
func TestTensorRTCacheConfig(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"dataDir: /var/lib/ledge\n", "/var/lib/ledge/tensorrt"},
		{"dataDir: /var/lib/ledge\ninference:\n  tensorrtCache: engines\n", "/var/lib/ledge/engines"},
		{"dataDir: /var/lib/ledge\ninference:\n  tensorrtCache: /mnt/nvme/trt\n", "/mnt/nvme/trt"},
	} {
		cfg, err := ParseConfig("ledge.yaml", []byte(tc.yaml))
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.Inference.tensorRTCache(cfg.DataDir); got != tc.want {
			t.Errorf("%q: cache %q, want %q", tc.yaml, got, tc.want)
		}
	}
	cfg := testConfig(t)
	app, err := New(t.Context(), cfg, BuildInfo{Version: "test"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	if got, want := app.cfg.Inference.TensorRTCache, filepath.Join(cfg.DataDir, "tensorrt"); got != want {
		t.Errorf("app's TensorRT cache %q, want %q", got, want)
	}
}
