package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ledge/internal/testenv"
)

// testImage builds a FROM scratch image of the agent's test program, and
// removes it when the test ends.
func testImage(t *testing.T, run string) string {
	t.Helper()
	testenv.Docker(t)
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "app"), "../../agent/testdata/modprog")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build modprog: %v\n%s", err, out)
	}
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nCOPY app /app\nENTRYPOINT [\"/app\"]\nCMD [\"forever\"]\n"), 0o644)
	tag := "ledge-cmd-test/app:" + run
	if out, err := testenv.DockerOutput("build", "-q", "--label", "io.ledge.test="+run, "-t", tag, dir); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	t.Cleanup(func() { testenv.DockerOutput("rmi", "-f", tag) })
	return tag
}

// TestDeployCLI drives the deploy commands against a running ledge and
// the real Docker engine: keys gen, sign, check (online and offline),
// apply --wait, status, history, a refused manifest, rollback.
func TestDeployCLI(t *testing.T) {
	b := make([]byte, 4)
	rand.Read(b)
	run := hex.EncodeToString(b)
	img := testImage(t, run)
	dir := t.TempDir()
	instance := "ltcmd-" + run
	t.Cleanup(func() {
		testenv.RemoveDocker("label=io.ledge.instance="+instance, "ledge-cmdtest-"+run)
	})

	keyOut, errOut, code := ledge(t, "keys", "gen", "--out", filepath.Join(dir, "deploy"))
	if code != 0 || !strings.Contains(keyOut, "trustedKeys") {
		t.Fatalf("keys gen: %d %s %s", code, keyOut, errOut)
	}
	trusted := keyOut[strings.Index(keyOut, `"ed25519:`):]
	trusted = strings.TrimSpace(trusted)
	cfg := filepath.Join(dir, "ledge.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`deviceId: %s
agent:
  containerPrefix: lt%s-
  network: ledge-cmdtest-%s
  trustedKeys: [%s]
  rollback: {stableFor: 300ms}
`+freeListeners, instance, run, run, trusted)), 0o644)
	dataDir := filepath.Join(dir, "data")
	startLedge(t, "--config", cfg, "--data-dir", dataDir)
	base := []string{"--config", cfg, "--data-dir", dataDir}

	manifest := func(version, modules string) string {
		p := filepath.Join(dir, "m"+version+".yaml")
		os.WriteFile(p, []byte("version: \""+version+"\"\nmodules:\n"+modules), 0o644)
		return p
	}
	m1 := manifest("1", "  web: {image: "+img+", imagePullPolicy: never}\n")
	if _, errOut, code := ledge(t, "deploy", "sign", "--key", filepath.Join(dir, "deploy.key"), m1); code != 0 {
		t.Fatalf("sign: %s", errOut)
	}
	out, errOut, code := ledge(t, append([]string{"deploy", "check", m1}, base...)...)
	if code != 0 || !strings.Contains(out, "create  module  web") || !strings.Contains(out, "signed by") {
		t.Fatalf("check: %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = ledge(t, append([]string{"deploy", "apply", "--wait", m1}, base...)...)
	if code != 0 || !strings.Contains(out, "converged") {
		t.Fatalf("apply: %d\n%s%s", code, out, errOut)
	}
	out, _, code = ledge(t, append([]string{"deploy", "status"}, base...)...)
	if code != 0 || strings.Contains(out, "status 200") || !strings.Contains(out, `deployment "1"`) || !strings.Contains(out, "converged") ||
		!strings.Contains(out, "web") || !strings.Contains(out, "running") {
		t.Errorf("status: %d\n%s", code, out)
	}

	// Unsigned: refused, with the reason; nothing changes.
	m2 := manifest("2", "  web: {image: "+img+", imagePullPolicy: never}\n  api: {image: "+img+", imagePullPolicy: never}\n")
	_, errOut, code = ledge(t, append([]string{"deploy", "apply", m2}, base...)...)
	if code != 1 || !strings.Contains(errOut, "not signed") {
		t.Errorf("unsigned apply: %d %s", code, errOut)
	}
	// Invalid: refused, with the field and line, also offline.
	bad := manifest("3", "  web: {image: "+img+", restartPolicy: sometimes}\n")
	for _, extra := range [][]string{{"deploy", "check", bad}, {"deploy", "check", "--offline", bad}} {
		_, errOut, code = ledge(t, append(extra, base...)...)
		if code != 1 || !strings.Contains(errOut, "line 3") || !strings.Contains(errOut, "modules.web.restartPolicy") {
			t.Errorf("%v: %d %s", extra, code, errOut)
		}
	}

	ledge(t, "deploy", "sign", "--key", filepath.Join(dir, "deploy.key"), m2)
	if out, errOut, code = ledge(t, append([]string{"deploy", "apply", "--wait", m2}, base...)...); code != 0 {
		t.Fatalf("apply 2: %d %s %s", code, out, errOut)
	}
	out, errOut, code = ledge(t, append([]string{"deploy", "rollback"}, base...)...)
	if code != 0 || !strings.Contains(out, `rolling back to deployment "1"`) {
		t.Errorf("rollback: %d %s %s", code, out, errOut)
	}
	out, _, _ = ledge(t, append([]string{"deploy", "history"}, base...)...)
	if !strings.Contains(out, "rolled-back") || strings.Count(out, "\n") != 3 {
		t.Errorf("history:\n%s", out)
	}
}

// TestDeployCheckOfflineElevated: `deploy check --offline` reads the
// privilege policy from the config: a manifest asking for host
// networking and a bind of / is refused naming the module, the settings
// and the key; with agent.allowElevatedPermissions the plan lists them.
func TestDeployCheckOfflineElevated(t *testing.T) {
	dir := t.TempDir()
	m := filepath.Join(dir, "m.yaml")
	os.WriteFile(m, []byte("version: \"1\"\nmodules:\n  evil: {image: x, createOptions: {HostConfig: {NetworkMode: host, Binds: [\"/:/host\", \"/srv/media:/media\"]}}}\n"), 0o644)
	conf := filepath.Join(dir, "ledge.yaml")
	os.WriteFile(conf, []byte("agent:\n  allowedBindSources: [/srv/media]\n"), 0o644)
	out, errOut, code := ledge(t, "deploy", "check", "--offline", "--config", conf, m)
	if code != 1 {
		t.Fatalf("refused manifest: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{`module "evil"`, "HostConfig.NetworkMode", `"/:/host"`, "agent.allowElevatedPermissions"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("refusal lacks %q:\n%s", want, errOut)
		}
	}
	if strings.Contains(errOut, "/srv/media:/media") {
		t.Errorf("the allowed bind source is flagged:\n%s", errOut)
	}
	os.WriteFile(conf, []byte("agent:\n  allowElevatedPermissions: true\n"), 0o644)
	out, errOut, code = ledge(t, "deploy", "check", "--offline", "--config", conf, m)
	if code != 0 || !strings.Contains(out, "elevated container settings") || !strings.Contains(out, "HostConfig.NetworkMode") || !strings.Contains(out, "/srv/media:/media") {
		t.Fatalf("allowed: exit %d\n%s%s", code, out, errOut)
	}
}

// TestDockerUnreachable: with no Docker engine at its address, ledge says
// so once in its log at start, and deploy check, deploy apply --wait and
// status say "Docker engine unreachable at <address>" instead of a normal
// plan and an endless wait.
func TestDockerUnreachable(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "no-docker.sock")
	cfg := filepath.Join(dir, "ledge.yaml")
	os.WriteFile(cfg, []byte("deviceId: nodocker-"+filepath.Base(dir)+"\nagent:\n  dockerHost: unix://"+sock+"\n"+freeListeners), 0o644)
	dataDir := filepath.Join(dir, "data")
	d := startLedge(t, "--config", cfg, "--data-dir", dataDir)
	base := []string{"--config", cfg, "--data-dir", dataDir}
	want := "Docker engine unreachable at unix://" + sock

	m := filepath.Join(dir, "m.yaml")
	os.WriteFile(m, []byte("version: \"1\"\nmodules:\n  web: {image: ledge-none/web:1, imagePullPolicy: never}\n"), 0o644)
	out, errOut, code := ledge(t, append([]string{"deploy", "check", m}, base...)...)
	if code != 0 || !strings.Contains(out, want) || !strings.Contains(out, "create  module  web") {
		t.Errorf("check: exit %d\n%s%s", code, out, errOut)
	}
	start := time.Now()
	out, errOut, code = ledge(t, append([]string{"deploy", "apply", "--wait", m}, base...)...)
	if code != 1 || !strings.Contains(errOut, want) || strings.Contains(out, "unknown |") && !strings.Contains(out, want) {
		t.Errorf("apply --wait: exit %d after %s\n%s%s", code, time.Since(start).Round(time.Second), out, errOut)
	}
	out, _, _ = ledge(t, append([]string{"deploy", "status"}, base...)...)
	if !strings.Contains(out, want) {
		t.Errorf("deploy status:\n%s", out)
	}
	out, _, _ = ledge(t, append([]string{"status"}, base...)...)
	if !strings.Contains(out, want) {
		t.Errorf("status:\n%s", out)
	}
	log := d.stderr.String()
	if n := strings.Count(log, "docker engine unreachable"); n != 1 || !strings.Contains(log, "level=WARN") || !strings.Contains(log, sock) {
		t.Errorf("the log tells of the engine %d times, want once at WARN with its address:\n%s", n, log)
	}
}

// TestDeployWaitSaysWhy: apply --wait with a module whose image cannot be
// pulled says why on its progress line (the pull's error and the next
// try), as deploy status does, not "web unknown" until the user gives up.
func TestDeployWaitSaysWhy(t *testing.T) {
	testenv.Docker(t)
	b := make([]byte, 4)
	rand.Read(b)
	run := hex.EncodeToString(b)
	dir := t.TempDir()
	instance := "ltwhy-" + run
	t.Cleanup(func() {
		testenv.RemoveDocker("label=io.ledge.instance="+instance, "ledge-whytest-"+run)
	})
	cfg := filepath.Join(dir, "ledge.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("deviceId: %s\nagent:\n  containerPrefix: lw%s-\n  network: ledge-whytest-%s\n"+freeListeners, instance, run, run)), 0o644)
	dataDir := filepath.Join(dir, "data")
	startLedge(t, "--config", cfg, "--data-dir", dataDir)
	// A registry at a closed port: the engine's pull fails at once.
	img := closedRegistry(t) + "/ledge-none/web:" + run
	m := filepath.Join(dir, "m.yaml")
	os.WriteFile(m, []byte("version: \"1\"\nmodules:\n  web: {image: "+img+"}\n"), 0o644)
	out, errOut, code := ledge(t, "deploy", "apply", "--wait", "--timeout", "8s", "--config", cfg, "--data-dir", dataDir, m)
	if code != 1 || !strings.Contains(out, "web unknown (pull of "+img+" failed") || !strings.Contains(out, "retrying at") {
		t.Errorf("apply --wait: exit %d\n%s%s", code, out, errOut)
	}
}

// closedRegistry is a host:port on loopback where nothing listens.
func closedRegistry(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// freeListeners ends a test's own ledge.yaml: HTTPS and the hub on free
// ports of loopback (a ledge of the Quickstart, or of another test, may
// hold the defaults).
const freeListeners = "http:\n  listenTLS: 127.0.0.1:0\nhub:\n  listen:\n    mqtt: 127.0.0.1:0\n    mqtts: 127.0.0.1:0\n"

// TestDeployWithoutModulesNeedsNoDocker: a deployment that runs no
// container module (pipelines only, as a fleet of Docker-less cameras
// gets) converges with no Docker engine at all: nothing of it waits for
// the engine (it stayed applying, then failed after rollback.timeout).
func TestDeployWithoutModulesNeedsNoDocker(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "ledge.yaml")
	os.WriteFile(cfg, []byte("deviceId: nodocker-"+filepath.Base(dir)+"\nagent:\n  dockerHost: unix://"+filepath.Join(dir, "no-docker.sock")+"\n"+freeListeners), 0o644)
	dataDir := filepath.Join(dir, "data")
	startLedge(t, "--config", cfg, "--data-dir", dataDir)
	m := filepath.Join(dir, "m.yaml")
	os.WriteFile(m, []byte("version: \"1\"\npipelines:\n  - {name: pat, source: {url: \"testpattern:\", fps: 2}}\n"), 0o644)
	out, errOut, code := ledge(t, "deploy", "apply", "--wait", "--timeout", "20s", "--config", cfg, "--data-dir", dataDir, m)
	if code != 0 || !strings.Contains(out, "converged") {
		t.Errorf("apply --wait of a deployment without modules, no Docker: exit %d\n%s%s", code, out, errOut)
	}
}

// TestDeployStatusSaysUnsigned (third audit; issue 12, finding 2): the
// Deployments page says that remote deployments are taken unsigned, and
// that the running deployment was applied before signing was turned on;
// `ledge deploy status` said neither.
func TestDeployStatusSaysUnsigned(t *testing.T) {
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	conf := filepath.Join(dir, "ledge.yaml")
	head := fmt.Sprintf("deviceId: unsigned-%d\nhttp:\n  listenTLS: 127.0.0.1:0\nhub:\n  listen:\n    mqtt: 127.0.0.1:0\n    mqtts: 127.0.0.1:0\n"+
		"agent:\n  sources:\n    http: {url: \"http://127.0.0.1:1/deployment.yaml\", interval: 1h}\n", time.Now().UnixNano()%1e6)
	os.WriteFile(conf, []byte(head), 0o644)
	args := []string{"--config", conf, "--data-dir", dataDir}
	d := &runningLedge{addr: freePort(t), stderr: &syncBuffer{}, done: make(chan error, 1)}
	launch(t, d, "", nil, append([]string{"run"}, args...)...)
	m := filepath.Join(dir, "m.yaml")
	os.WriteFile(m, []byte("version: \"1\"\n"), 0o644)
	if out, errOut, code := ledge(t, append([]string{"deploy", "apply", m}, args...)...); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, _ := ledge(t, append([]string{"deploy", "status"}, args...)...)
	if !strings.Contains(out, "remote deployments are not signed") || !strings.Contains(out, "agent.trustedKeys") {
		t.Errorf("deploy status without trusted keys and a remote source does not say remote deployments are unsigned:\n%s%s", out, errOut)
	}

	// Signing turned on: the running deployment is flagged.
	d.cmd.Process.Signal(os.Interrupt)
	err := <-d.done
	d.done <- err
	keyOut, errOut, code := ledgeIn(t, dir, nil, "keys", "gen", "--out", "ops")
	if code != 0 {
		t.Fatalf("keys gen: %s%s", keyOut, errOut)
	}
	key := keyOut[strings.Index(keyOut, "ed25519:"):]
	key = key[:strings.IndexAny(key, "\"\n")]
	os.WriteFile(conf, []byte(head+"  trustedKeys: [\""+key+"\"]\n"), 0o644)
	d = &runningLedge{addr: freePort(t), stderr: &syncBuffer{}, done: make(chan error, 1)}
	launch(t, d, "", nil, append([]string{"run"}, args...)...)
	out, errOut, _ = ledge(t, append([]string{"deploy", "status"}, args...)...)
	if !strings.Contains(out, "unsigned") || !strings.Contains(out, "before signing was turned on") {
		t.Errorf("deploy status after signing was turned on does not flag the unsigned deployment:\n%s%s", out, errOut)
	}
	if strings.Contains(out, "remote deployments are not signed") {
		t.Errorf("deploy status with trusted keys says remote deployments are unsigned:\n%s", out)
	}
}
