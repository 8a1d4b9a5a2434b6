package appliance

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ledge/agent"
	"ledge/internal/testenv"
	"ledge/models"
	"ledge/pipeline"
)

// ociRegistry is Debian's docker-registry on a free loopback port, with
// TLS (a CA made here) and htpasswd (testenv.OCIRegistry).
type ociRegistry struct {
	addr, user, password, caFile, root string
	tls                                *tls.Config
}

func startOCIRegistry(t *testing.T) *ociRegistry {
	t.Helper()
	r := testenv.OCIRegistry(t)
	return &ociRegistry{addr: r.Addr, user: r.User, password: r.Password, caFile: r.CAFile, root: r.Root, tls: r.TLS}
}

func (r *ociRegistry) client() models.OCIClient {
	return models.OCIClient{TLS: r.tls, Username: r.user, Password: r.password}
}

// TestOCIModelPulledByDigestAndSwapped: models pushed to a registry (TLS,
// htpasswd) as OCI artifacts are pulled by digest through a pipeline's
// models section with the deployment's registryCredentials, and swapped
// under load; a blob changed on the registry's disk is refused.
func TestOCIModelPulledByDigestAndSwapped(t *testing.T) {
	testenv.Docker(t)
	reg := startOCIRegistry(t)
	dir := t.TempDir()
	video := panVideo(t, dir)
	ctx := t.Context()

	push := func(file, tag string) (models.OCIRef, string) {
		t.Helper()
		ref, err := models.ParseOCIRef("oci://" + reg.addr + "/ledge-test/people:" + tag)
		if err != nil {
			t.Fatal(err)
		}
		pinned, sum, err := reg.client().PushOCI(ctx, file, ref, models.PushOptions{Labels: []string{"person"}})
		if err != nil {
			t.Fatal(err)
		}
		return pinned, sum
	}
	nano, nanoSum := push(testenv.Model(t, "yolox_nano.onnx"), "1")
	fast, fastSum := push(testenv.Model(t, "fastestdet.onnx"), "2")
	// The same digest comes back from a tag.
	if m, err := reg.client().Resolve(ctx, models.OCIRef{Host: reg.addr, Repo: "ledge-test/people", Reference: "2"}); err != nil ||
		m.Ref != fast || m.SHA256 != fastSum || strings.Join(m.Labels, ",") != "person" {
		t.Fatalf("resolve :2: %+v %v, want %s", m, err, fast)
	}
	// Without credentials the registry answers 401: no model.
	if _, err := (models.OCIClient{TLS: reg.tls}).Resolve(ctx, nano); err == nil {
		t.Fatal("resolved without credentials")
	}

	cfg := testConfig(t)
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Models.CAFile = reg.caFile
	cfg.Agent.Rollback.StableFor = 0
	cfg.Pipeline.Detector = pipeline.DetectorConfig{Sessions: 2, Threads: 1}
	manifest := func(version, mv string, ref models.OCIRef, sum, kind string) []byte {
		return fmt.Appendf(nil, `version: %q
registryCredentials:
  local: {address: %q, username: %q, password: %q}
models:
  - {name: people, version: %q, url: %q, sha256: %s, kind: %s}
pipelines:
  - name: cam
    source: {url: "file:%s", loop: true}
    detect: {model: people, classes: [person]}
`, version, reg.addr, reg.user, reg.password, mv, ref.String(), sum, kind, video)
	}
	app, _ := startApp(t, cfg)
	if _, err := app.agent.Apply(ctx, manifest("1", "1", nano, nanoSum, "yolox"), nil); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "pipeline cam", func() bool { _, err := app.Pipelines().Spec("cam"); return err == nil })
	log, stop := collectResults(t, app.Pipelines(), "cam")
	defer stop()
	state := func() string {
		st, _ := app.Pipelines().PipelineStats("cam")
		m, _ := app.Models().Get(ctx, "people")
		return fmt.Sprintf("%d results; pipeline %s %q, %d frames in, %d out, model %s@%s; models: active %q, versions %+v; deployment %+v",
			log.len(), st.State, st.Reason, st.FramesIn, st.FramesOut, st.Model, st.ModelVersion, m.Active, m.Versions, app.agent.Reported().Deployment)
	}
	waitUntilExplained(t, 60*time.Second, "30 frames on people@1 from the registry", func() bool { return log.framesOn("1", 0) >= 30 }, state)

	mark := log.len()
	if _, err := app.agent.Apply(ctx, manifest("2", "2", fast, fastSum, "fastestdet"), nil); err != nil {
		t.Fatal(err)
	}
	waitUntilExplained(t, 60*time.Second, "30 frames on people@2", func() bool { return log.framesOn("2", mark) >= 30 }, state)
	waitUntilExplained(t, 30*time.Second, "deployment 2 converged", func() bool {
		rep := app.agent.Reported()
		return rep.Deployment.Version == "2" && rep.Deployment.State == agent.StateConverged
	}, state)
	for _, s := range log.segments(t) {
		t.Logf("frames %d-%d on people@%s", s.first, s.last, s.version)
	}

	// A model whose blob is changed on the registry's disk (same size):
	// the registry serves it, the store refuses it and keeps people@2.
	orig, _ := os.ReadFile(testenv.Model(t, "fastestdet.onnx"))
	padded := filepath.Join(dir, "fastestdet-copy.onnx")
	os.WriteFile(padded, append(orig, '\n'), 0o644)
	copyRef, copySum := push(padded, "4")
	blob := filepath.Join(reg.root, "docker/registry/v2/blobs/sha256", copySum[:2], copySum, "data")
	data, _ := os.ReadFile(blob)
	data[len(data)/3] ^= 0xff
	os.WriteFile(blob, data, 0o644)
	if _, err := app.agent.Apply(ctx, manifest("3", "4", copyRef, copySum, "fastestdet"), nil); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 60*time.Second, "the tampered model refused", func() bool {
		m, _ := app.Models().Get(ctx, "people")
		for _, v := range m.Versions {
			if v.Version == "4" && v.State == models.StateFailed {
				return strings.Contains(v.Error, "digest mismatch")
			}
		}
		return false
	})
	if m, _ := app.Models().Get(ctx, "people"); m.Active != "2" {
		t.Errorf("active version %q after the tampered blob, want 2", m.Active)
	}
	mark = log.len()
	waitUntil(t, 30*time.Second, "frames still on people@2", func() bool { return log.framesOn("2", mark) >= 10 })
}

// TestOCIWrongCredentialsSaysSo: a model on a registry that refuses the
// deployment's credentials fails at once (a 401 is not retried, as for
// https) saying the registry refused them and which setting to fix, with
// no raw registry error map; the active version stays.
func TestOCIWrongCredentialsSaysSo(t *testing.T) {
	testenv.Docker(t)
	reg := startOCIRegistry(t)
	ctx := t.Context()
	ref, err := models.ParseOCIRef("oci://" + reg.addr + "/ledge-test/people:1")
	if err != nil {
		t.Fatal(err)
	}
	pinned, sum, err := reg.client().PushOCI(ctx, testenv.Model(t, "fastestdet.onnx"), ref, models.PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.Hub.Enabled = false
	cfg.Models.CAFile = reg.caFile
	cfg.Models.FileRoots = []string{filepath.Dir(testenv.Model(t, "yolox_nano.onnx"))}
	u := startAppliance(t, cfg)
	nano := testenv.Model(t, "yolox_nano.onnx")
	nanoSum, _, _ := fileSHA(nano)
	if _, err := u.app.Models().Pull(ctx, models.Spec{Name: "people", Version: "1", URL: "file://" + nano, SHA256: nanoSum, Kind: "yolox"}, true); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 20*time.Second, "people@1 active", func() bool { v, err := u.app.Models().Resolve("people"); return err == nil && v.Version == "1" })
	if _, err := u.app.agent.Apply(ctx, fmt.Appendf(nil, `version: "1"
registryCredentials:
  local: {address: %q, username: %q, password: wrong}
models:
  - {name: people, version: "2", url: %q, sha256: %s, kind: fastestdet}
`, reg.addr, reg.user, pinned.String(), sum), nil); err != nil {
		t.Fatal(err)
	}
	var v models.Version
	waitUntil(t, 30*time.Second, "people@2 failed", func() bool {
		m, _ := u.app.Models().Get(ctx, "people")
		for _, x := range m.Versions {
			if x.Version == "2" && x.State == models.StateFailed {
				v = x
				return true
			}
		}
		return false
	})
	if !strings.Contains(v.Error, "refused the credentials") || !strings.Contains(v.Error, "registryCredentials") || strings.Contains(v.Error, "map[") {
		t.Errorf("error %q: want it to say the registry refused the credentials and to name registryCredentials", v.Error)
	}
	if n := strings.Count(u.logs.String(), `msg="model download failed, retrying" component=models model=people version=2`); n != 0 {
		t.Errorf("a 401 was retried %d times", n)
	}
	if r, _ := u.app.Models().Resolve("people"); r.Version != "1" {
		t.Errorf("active %q, want 1", r.Version)
	}
}
