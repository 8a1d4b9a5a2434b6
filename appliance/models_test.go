package appliance

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"ledge/agent"
	"ledge/agent/manifest"
	"ledge/internal/fault"
	"ledge/internal/testenv"
	"ledge/models"
)

// modelFiles serves ../shared/models over plain http (the store's own
// tests cover https; here the agent's seam is under test).
func modelFiles(t *testing.T) (*httptest.Server, map[string]string) {
	t.Helper()
	digests := map[string]string{}
	for _, f := range []string{"yolox_nano.onnx", "fastestdet.onnx"} {
		data, err := os.ReadFile(testenv.Model(t, f))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		digests[f] = hex.EncodeToString(sum[:])
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(testenv.SharedDir(t) + "/models")))
	t.Cleanup(srv.Close)
	return srv, digests
}

// startApp runs an appliance until the test ends, or until stop.
func startApp(t *testing.T, cfg Config) (app *App, stop func()) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("LEDGE_TEST_LOG") != "" { // as the components' tests
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	app, err := New(t.Context(), cfg, BuildInfo{Version: "test"}, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
			app.Close()
		})
	}
	t.Cleanup(stop)
	return app, stop
}

// TestModelsSectionThroughAgent: a deployment's models section reaches
// the store through the agent; per-model status shows in the reported
// state; a model with a wrong digest fails the deployment, which rolls
// back with the old version still active; the Azure $ledge twin carries
// the same section; a bad section is refused naming the field.
func TestModelsSectionThroughAgent(t *testing.T) {
	testenv.Docker(t)
	srv, digests := modelFiles(t)
	cfg := testConfig(t)
	cfg.Models.AllowHTTP = true
	cfg.Agent.Rollback.StableFor = 0
	app, _ := startApp(t, cfg)
	ctx := t.Context()

	native := func(version, model, file, digest string) []byte {
		return fmt.Appendf(nil, "version: %q\nmodels:\n  - name: people\n    version: %q\n    url: %s/%s\n    sha256: %s\n    kind: yolox\n",
			version, model, srv.URL, file, digest)
	}
	m1 := native("1", "1", "yolox_nano.onnx", digests["yolox_nano.onnx"])
	plan, err := app.agent.Check(ctx, m1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Changes) != 1 || plan.Changes[0].Kind != "model" || plan.Changes[0].Action != agent.ActionCreate {
		t.Errorf("plan %+v", plan.Changes)
	}
	if _, err := app.agent.Apply(ctx, m1, nil); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "deployment 1 converged with people@1 active", func() bool {
		rep := app.agent.Reported()
		it, _ := rep.Sections["models"].Items["people"].(models.ItemStatus)
		return rep.Deployment != nil && rep.Deployment.State == agent.StateConverged && it.State == models.StateActive
	})
	if v, err := app.Models().Resolve("people"); err != nil || v.Version != "1" || v.Digest != digests["yolox_nano.onnx"] {
		t.Fatalf("resolve: %+v %v", v, err)
	}

	// A wrong digest: the deployment fails and rolls back; people@1 stays.
	m2 := native("2", "2", "fastestdet.onnx", digests["yolox_nano.onnx"][:63]+"0")
	if _, err := app.agent.Apply(ctx, m2, nil); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "deployment 2 rolled back", func() bool {
		rep := app.agent.Reported()
		return rep.Deployment != nil && rep.Deployment.Version == "1" && rep.Deployment.RolledBackFrom != nil
	})
	rep := app.agent.Reported()
	if !strings.Contains(rep.Deployment.RolledBackFrom.Reason, "digest mismatch") {
		t.Errorf("rollback reason %q", rep.Deployment.RolledBackFrom.Reason)
	}
	if v, _ := app.Models().Resolve("people"); v.Version != "1" {
		t.Errorf("active after the bad deployment: %s", v.Version)
	}
	m, _ := app.Models().Get(ctx, "people")
	if m.Desired != "1" || len(m.Versions) != 2 || m.Versions[0].State != models.StateFailed {
		t.Errorf("store after rollback: %+v", m)
	}

	// The Azure twin of a deployment with fastestdet.
	azure := fmt.Appendf(nil, `{"modulesContent": {
  "$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "runtime": {"type": "docker", "settings": {}},
    "systemModules": {}, "modules": {}}},
  "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {}, "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}}},
  "$ledge": {"properties.desired": {"version": "3", "models": [
    {"name": "people", "version": "3", "url": "%s/fastestdet.onnx", "sha256": "%s", "kind": "fastestdet"}]}}
}}`, srv.URL, digests["fastestdet.onnx"])
	if _, err := app.agent.Apply(ctx, azure, nil); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "people@3 active from the Azure manifest", func() bool {
		v, err := app.Models().Resolve("people")
		return err == nil && v.Version == "3" && v.Kind == "fastestdet"
	})

	// A bad section is refused whole, naming the field; nothing changes.
	bad := []byte("version: \"4\"\nmodels:\n  - name: people\n    version: \"4\"\n    url: " + srv.URL + "/x.onnx\n    sha256: nothex\n")
	_, err = app.agent.Apply(ctx, bad, nil)
	if !fault.Is(err, fault.Invalid) || !strings.Contains(err.Error(), "models: [0] (people).sha256") {
		t.Errorf("bad section: %v", err)
	}
	if v, _ := app.Models().Resolve("people"); v.Version != "3" {
		t.Errorf("a refused manifest changed the active model: %s", v.Version)
	}
	// The dashboard's event feed carries the store's events.
	events, _, cancel := app.events.Subscribe(64)
	defer cancel()
	if _, err := app.Models().Activate(ctx, "people", "1"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "a model.state event on the dashboard feed", func() bool {
		select {
		case ev := <-events:
			return ev.Type == models.EventState
		default:
			return false
		}
	})
}

// TestModelsExample: the example deployment's models section passes the
// store's checks (names, digests, kinds this ledge knows).
func TestModelsExample(t *testing.T) {
	data, err := os.ReadFile("../deploy/examples/models-deployment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifest.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.Agent.Enabled = false
	cfg.Hub.Enabled = false
	app, err := New(t.Context(), cfg, BuildInfo{Version: "test"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	specs, err := app.Models().CheckSection(t.Context(), m.Sections[manifest.SectionModels])
	if err != nil || len(specs) != 2 {
		t.Fatalf("%d models: %v", len(specs), err)
	}
}

// FuzzManifestModels: a manifest's models section, native or in the Azure
// $ledge twin, through the manifest parser and the store's parser: no
// panic, and what both accept is valid.
func FuzzManifestModels(f *testing.F) {
	d := strings.Repeat("ab", 32)
	f.Add([]byte("version: \"1\"\nmodels:\n  - {name: people, version: \"2\", url: \"https://m.example.com/p.onnx\", sha256: " + d + ", kind: yolox}\n"))
	f.Add([]byte("version: \"1\"\nmodels:\n  people: {version: 3, url: \"file:///m/p.onnx\", sha256: \"sha256:" + d + "\", labels: [a, b], inputSize: 640x480}\n"))
	f.Add([]byte(`{"modulesContent": {"$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "runtime": {"type": "docker", "settings": {}}, "systemModules": {}, "modules": {}}},
  "$ledge": {"properties.desired": {"version": "2", "models": [{"name": "p", "version": "1", "url": "https://h/p", "sha256": "` + d + `", "signature": {"keyId": "0011223344556677", "sig": "` + strings.Repeat("A", 86) + `=="}}]}}}}`))
	f.Add([]byte("version: \"1\"\nmodels: [{name: ../x}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := manifest.Parse(data)
		if err != nil {
			return
		}
		specs, err := models.ParseSection(m.Sections[manifest.SectionModels])
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		for _, s := range specs {
			if models.ValidName(s.Name) != "" || models.ValidVersion(s.Version) != "" || len(s.SHA256) != 64 {
				t.Fatalf("accepted %+v", s)
			}
		}
	})
}

// TestModelThatDoesNotFit: a version that loads but does not fit its
// declared kind, or whose labels do not match its classes, is refused by
// the activation's load-and-warm check even when no pipeline runs its name
// (the store then loads it on its own), and the version before stays.
func TestModelThatDoesNotFit(t *testing.T) {
	cfg := testConfig(t)
	cfg.Agent.Enabled = false
	cfg.Hub.Enabled = false
	cfg.Models.FileRoots = []string{filepath.Dir(testenv.Model(t, "yolox_nano.onnx"))}
	app, _ := startApp(t, cfg)
	ctx := t.Context()
	pull := func(version, file, kind string, labels []string, activate bool) (models.Version, error) {
		path := testenv.Model(t, file)
		sum, _, err := fileSHA(path)
		if err != nil {
			t.Fatal(err)
		}
		return app.Models().Pull(ctx, models.Spec{Name: "people", Version: version, URL: "file://" + path, SHA256: sum, Kind: kind, Labels: labels}, activate)
	}
	if _, err := pull("1", "yolox_nano.onnx", "yolox", nil, true); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 20*time.Second, "people@1 active", func() bool { v, err := app.Models().Resolve("people"); return err == nil && v.Version == "1" })
	for _, tc := range []struct {
		version, file, kind string
		labels              []string
		want                string
	}{
		{"2", "fastestdet.onnx", "yolox", nil, "does not fit kind yolox"},
		{"3", "fastestdet.onnx", "fastestdet", []string{"person", "car"}, "2 names for a model with 80 classes"},
	} {
		if _, err := pull(tc.version, tc.file, tc.kind, tc.labels, false); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, 20*time.Second, "people@"+tc.version+" ready", func() bool {
			m, _ := app.Models().Get(ctx, "people")
			return len(m.Versions) > 0 && m.Versions[0].Version == tc.version && m.Versions[0].State == models.StateReady
		})
		_, err := app.Models().Activate(ctx, "people", tc.version)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "1 stays active") {
			t.Errorf("activate people@%s: %v, want %q", tc.version, err, tc.want)
		}
		if v, _ := app.Models().Resolve("people"); v.Version != "1" {
			t.Errorf("active after a refused activation: %s", v.Version)
		}
	}
}

// TestModelRefusedLoggedOnce: a version that is not ONNX, pushed to be
// activated once ready, is refused by real ONNX Runtime, the old version
// stays, and the refusal is in the log once (not once by the store and
// again by the background job that ran the activation).
func TestModelRefusedLoggedOnce(t *testing.T) {
	cfg := testConfig(t)
	cfg.Agent.Enabled = false
	cfg.Hub.Enabled = false
	dir := t.TempDir()
	cfg.Models.FileRoots = []string{filepath.Dir(testenv.Model(t, "yolox_nano.onnx")), dir}
	u := startAppliance(t, cfg)
	ctx := t.Context()
	pull := func(version, path string) {
		t.Helper()
		sum, _, err := fileSHA(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := u.app.Models().Pull(ctx, models.Spec{Name: "people", Version: version, URL: "file://" + path, SHA256: sum, Kind: "yolox"}, true); err != nil {
			t.Fatal(err)
		}
	}
	pull("1", testenv.Model(t, "yolox_nano.onnx"))
	waitUntil(t, 20*time.Second, "people@1 active", func() bool { v, err := u.app.Models().Resolve("people"); return err == nil && v.Version == "1" })
	garbage := filepath.Join(dir, "garbage.onnx")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a model ", 4096)), 0o644); err != nil {
		t.Fatal(err)
	}
	pull("2", garbage)
	waitUntil(t, 20*time.Second, "people@2 failed", func() bool {
		m, _ := u.app.Models().Get(ctx, "people")
		return len(m.Versions) > 0 && m.Versions[0].Version == "2" && m.Versions[0].State == models.StateFailed
	})
	if v, _ := u.app.Models().Resolve("people"); v.Version != "1" {
		t.Errorf("active after a refused version: %s", v.Version)
	}
	var warns []string
	for _, l := range strings.Split(u.logs.String(), "\n") {
		if strings.Contains(l, "level=WARN") && strings.Contains(l, "component=models") && strings.Contains(l, "version=2") {
			warns = append(warns, l)
		}
	}
	if len(warns) != 1 || !strings.Contains(warns[0], "not a readable ONNX model") {
		t.Errorf("the refusal of people@2 logged %d times, want once naming the reason:\n%s", len(warns), strings.Join(warns, "\n"))
	}
}
