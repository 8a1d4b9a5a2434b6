package appliance

import (
	"encoding/base64"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A relative path in ledge.yaml means "beside this file", whatever folder
// ledge was started from.
func TestLoadConfigResolvesRelativePaths(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "site", "ledge.yaml")
	os.MkdirAll(filepath.Join(dir, "site", "keys"), 0o755)
	os.WriteFile(filepath.Join(dir, "site", "keys", "ops.pub"), []byte(base64.StdEncoding.EncodeToString(make([]byte, 32))+"\n"), 0o644)
	os.WriteFile(conf, []byte(`
dataDir: ledge-data
inference:
  library: lib/libonnxruntime.so.1
pipeline:
  snapshotDir: snaps
agent:
  trustedKeys: [keys/ops.pub, "ed25519:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]
hub:
  tls:
    clientCAFile: ca/clients.pem
pipelines:
  - name: a
    source: {url: "file:videos/a.mp4"}
    detect: {model: ../models/m.onnx}
  - name: b
    source: {url: "videos/b.mp4"}
    detect: {model: people}
  - name: c
    source: {url: "images:frames/*.jpg"}
  - name: d
    source: {url: "file:/abs/d.mp4"}
    detect: {model: /abs/m.onnx}
  - name: e
    source: {url: "testpattern:"}
    detect: {model: m.onnx}
`), 0o644)
	// From another working directory, with a relative path to the file.
	t.Chdir(dir)
	cfg, err := LoadConfig("site/ledge.yaml")
	if err != nil {
		t.Fatal(err)
	}
	site := filepath.Join(dir, "site")
	for _, c := range []struct{ what, got, want string }{
		{"dataDir", cfg.DataDir, filepath.Join(site, "ledge-data")},
		{"inference.library", cfg.Inference.Library, filepath.Join(site, "lib/libonnxruntime.so.1")},
		{"pipeline.snapshotDir", cfg.Pipeline.SnapshotDir, filepath.Join(site, "snaps")},
		{"agent.trustedKeys[0]", cfg.Agent.TrustedKeys[0], filepath.Join(site, "keys/ops.pub")},
		{"agent.trustedKeys[1]", cfg.Agent.TrustedKeys[1], "ed25519:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="},
		{"hub.tls.clientCAFile", cfg.Hub.TLS.ClientCAFile, filepath.Join(site, "ca/clients.pem")},
		{"a source", cfg.Pipelines[0].Source.URL, "file:" + filepath.Join(site, "videos/a.mp4")},
		{"a model", cfg.Pipelines[0].Detect.Model, filepath.Join(dir, "models/m.onnx")},
		{"b source", cfg.Pipelines[1].Source.URL, filepath.Join(site, "videos/b.mp4")},
		{"b model (a name)", cfg.Pipelines[1].Detect.Model, "people"},
		{"c source", cfg.Pipelines[2].Source.URL, "images:" + filepath.Join(site, "frames/*.jpg")},
		{"d source", cfg.Pipelines[3].Source.URL, "file:/abs/d.mp4"},
		{"d model", cfg.Pipelines[3].Detect.Model, "/abs/m.onnx"},
		{"e source", cfg.Pipelines[4].Source.URL, "testpattern:"},
		{"e model", cfg.Pipelines[4].Detect.Model, filepath.Join(site, "m.onnx")},
	} {
		if c.got != c.want {
			t.Errorf("%s: %q, want %q", c.what, c.got, c.want)
		}
	}
}

// The defaults are absolute; a library name without a slash is left to
// the dynamic loader's search path.
func TestLoadConfigKeepsAbsoluteAndBareNames(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "ledge.yaml")
	os.WriteFile(conf, []byte("inference: {library: libonnxruntime.so.1}\n"), 0o644)
	cfg, err := LoadConfig(conf)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != Default().DataDir || cfg.Inference.Library != "libonnxruntime.so.1" {
		t.Errorf("dataDir %q, library %q", cfg.DataDir, cfg.Inference.Library)
	}
}

// A relative data dir given to New (--data-dir) is made absolute, so the
// CA a container bind-mounts and the CLI's socket are absolute paths.
func TestNewMakesDataDirAbsolute(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	cfg := testConfig(t)
	cfg.DataDir = "rel-data"
	a, err := New(t.Context(), cfg, BuildInfo{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if want := filepath.Join(dir, "rel-data"); a.cfg.DataDir != want {
		t.Errorf("data dir %q, want %q", a.cfg.DataDir, want)
	}
	if a.hub != nil && !filepath.IsAbs(a.hub.CAPath()) {
		t.Errorf("hub CA path %q is relative", a.hub.CAPath())
	}
}

// The example configs load from any folder, and the model files they
// name are there (paths relative to the example's folder).
func TestExampleConfigsLoad(t *testing.T) {
	files, _ := filepath.Glob("../deploy/examples/*.yaml")
	n := 0
	for _, f := range files {
		data, _ := os.ReadFile(f)
		if !strings.Contains(string(data), "pipelines:") && !strings.Contains(string(data), "dataDir:") {
			continue // a deployment manifest
		}
		n++
		cfg, err := LoadConfig(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if !filepath.IsAbs(cfg.DataDir) {
			t.Errorf("%s: data dir %q", f, cfg.DataDir)
		}
		for _, p := range cfg.Pipelines {
			if p.Detect != nil {
				if _, err := os.Stat(p.Detect.Model); err != nil {
					t.Errorf("%s: pipeline %s: %v", f, p.Name, err)
				}
			}
		}
	}
	if n < 3 {
		t.Errorf("found %d example configs, want ledge.yaml and the pipeline examples", n)
	}
}

// TestExampleListenersLoopback: an example config that keeps its dashboard
// on loopback keeps HTTPS there too, and its hub's MQTT ports, unless its
// comments say why the hub must be reachable from elsewhere.
func TestExampleListenersLoopback(t *testing.T) {
	files, _ := filepath.Glob("../deploy/examples/*.yaml")
	loopback := func(addr string) bool {
		host, _, err := net.SplitHostPort(addr)
		return addr == "" || err == nil && (host == "127.0.0.1" || host == "localhost" || host == "::1")
	}
	n := 0
	for _, f := range files {
		data, _ := os.ReadFile(f)
		if !strings.Contains(string(data), "dataDir:") {
			continue // a deployment manifest
		}
		cfg, err := LoadConfig(f)
		if err != nil || !loopback(cfg.HTTP.Listen) {
			continue
		}
		n++
		if !loopback(cfg.HTTP.ListenTLS) {
			t.Errorf("%s: http.listen is %s but https listens on %q", f, cfg.HTTP.Listen, cfg.HTTP.ListenTLS)
		}
		if (!loopback(cfg.Hub.Listen.MQTT) || !loopback(cfg.Hub.Listen.MQTTS)) && !strings.Contains(string(data), "# The hub listens on every interface") {
			t.Errorf("%s: http.listen is %s but the hub listens on %q and %q, and no comment says why", f, cfg.HTTP.Listen, cfg.Hub.Listen.MQTT, cfg.Hub.Listen.MQTTS)
		}
	}
	if n < 2 {
		t.Errorf("%d loopback examples, want the pipeline examples", n)
	}
}
