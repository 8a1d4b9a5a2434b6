package appliance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"ledge/agent"
	"ledge/hub"
	"ledge/internal/fault"
	"ledge/internal/testenv"
)

// Security tests: each runs the attack of one finding of issue 12
// against a whole appliance (real Docker, real mosquitto upstream).

// buildAttackerImage builds testdata/attacker into a FROM scratch image.
func buildAttackerImage(t *testing.T, tag string) {
	t.Helper()
	testenv.Docker(t)
	dir := t.TempDir()
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", filepath.Join(dir, "attacker"), "./testdata/attacker")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build attacker: %v\n%s", err, out)
	}
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nCOPY attacker /attacker\nENTRYPOINT [\"/attacker\"]\n"), 0o644)
	if out, err := testenv.DockerOutput("build", "-q", "-t", tag, dir); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	t.Cleanup(func() { testenv.DockerOutput("rmi", "-f", tag) })
}

// upstreamAppliance is an appliance whose deployments come from a real
// mosquitto, with its log kept.
type upstreamAppliance struct {
	app    *App
	cfg    Config
	broker string
	logs   *syncBuffer
	stop   func()
}

// runUpstreamAppliance runs an appliance whose deployments come from a
// real mosquitto (started here when broker is "").
func runUpstreamAppliance(t *testing.T, broker string, mutate func(*Config)) *upstreamAppliance {
	t.Helper()
	if broker == "" {
		broker = startMosquitto(t)
	}
	id := runID()
	cfg := testConfig(t)
	cfg.DeviceID = "gw-" + id
	cfg.Hub.Listen = hub.ListenConfig{MQTT: "127.0.0.1:0", MQTTS: "127.0.0.1:0"}
	cfg.Hub.Upstream = hub.UpstreamConfig{Mode: "mqtt", URL: "tcp://" + broker, TopicTemplate: "cloud/{deviceId}/{sourceModule}"}
	cfg.Agent.Network = "ledge-test-" + id
	cfg.Agent.ContainerPrefix = "t" + id + "-"
	cfg.Agent.Rollback.StableFor = 500 * time.Millisecond
	if mutate != nil {
		mutate(&cfg)
	}
	u := startAppliance(t, cfg)
	u.broker = broker
	return u
}

// removeTestModules removes the containers a test's appliance made (those
// labelled with its device id, unique per test) and its module network
// when the test named one of its own. Call it after the appliance
// stopped: a running agent makes them again.
func removeTestModules(cfg Config) {
	var networks []string
	if strings.HasPrefix(cfg.Agent.Network, "ledge-test-") {
		networks = append(networks, cfg.Agent.Network)
	}
	testenv.RemoveDocker("label=io.ledge.instance="+cfg.DeviceID, networks...)
}

// startAppliance runs an appliance on cfg until stop (or the test's end).
func startAppliance(t *testing.T, cfg Config) *upstreamAppliance {
	t.Helper()
	logs := &syncBuffer{}
	app, err := New(t.Context(), cfg, BuildInfo{Version: "test"}, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			<-done
			app.Close()
		})
	}
	t.Cleanup(func() { removeTestModules(cfg) }) // runs after stop (cleanups run last first)
	t.Cleanup(stop)
	return &upstreamAppliance{app: app, cfg: cfg, logs: logs, stop: stop}
}

// syncBuffer is a bytes.Buffer safe for concurrent use (a log sink).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// publishUpstream puts a retained deployment on the broker with
// mosquitto_pub, as the cloud would.
func publishUpstream(t *testing.T, broker, topic string, payload []byte) {
	t.Helper()
	pub := testenv.Command(t, "mosquitto_pub", "mosquitto-clients")
	host, port, _ := net.SplitHostPort(broker)
	f := filepath.Join(t.TempDir(), "payload")
	os.WriteFile(f, payload, 0o600)
	if out, err := exec.Command(pub, "-h", host, "-p", port, "-r", "-q", "1", "-t", topic, "-f", f).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v %s", err, out)
	}
}

// TestElevatedModuleFromUpstreamRefused (finding 1): an unsigned manifest
// delivered over MQTT asks for host network and PID namespaces and binds
// of / and the Docker socket. It is refused, naming the module, each
// setting and the config key; no container is made, and the host's
// /etc/shadow stays unread. Privileged and CapAdd through the API, and
// deploy check, are refused the same way; the module's own data dir may
// be bound.
func TestElevatedModuleFromUpstreamRefused(t *testing.T) {
	image := "ledge-test/attacker:" + runID()
	buildAttackerImage(t, image)
	u := runUpstreamAppliance(t, "", nil)
	app, cfg, broker := u.app, u.cfg, u.broker

	attack := fmt.Sprintf(`version: "1"
modules:
  evil:
    image: %s
    imagePullPolicy: never
    restartPolicy: always
    createOptions:
      HostConfig:
        NetworkMode: host
        PidMode: host
        Binds: ["/:/host", "/var/run/docker.sock:/var/run/docker.sock"]
`, image)
	publishUpstream(t, broker, "ledge/"+cfg.DeviceID+"/deployment", []byte(attack))

	name := cfg.Agent.ContainerPrefix + "evil"
	waitUntil(t, 60*time.Second, "the attack refused or run", func() bool {
		return app.agent.Reported().Rejected != nil || containerIDs(t, cfg.Agent.ContainerPrefix) != ""
	})
	if ids := containerIDs(t, cfg.Agent.ContainerPrefix); ids != "" {
		time.Sleep(time.Second)
		t.Fatalf("the attack manifest from upstream was run: container %s; it printed:\n%s", name, dockerLogs(name))
	}
	rej := app.agent.Reported().Rejected
	for _, want := range []string{`module "evil"`, "NetworkMode", "PidMode", "/:/host", "docker.sock", "agent.allowElevatedPermissions"} {
		if !strings.Contains(rej.Reason, want) {
			t.Errorf("rejection %q lacks %q", rej.Reason, want)
		}
	}
	if rej.Source != "mqtt" {
		t.Errorf("rejection source %q, want mqtt", rej.Source)
	}

	// Privileged and CapAdd through the API: refused (403), by check too.
	priv := fmt.Sprintf(`version: "2"
modules:
  root:
    image: %s
    imagePullPolicy: never
    createOptions: {HostConfig: {Privileged: true, CapAdd: [ALL], SecurityOpt: ["seccomp=unconfined"]}}
`, image)
	for _, f := range []func(context.Context, []byte, []byte) (any, error){
		func(ctx context.Context, m, s []byte) (any, error) { return app.agent.Check(ctx, m, s) },
		func(ctx context.Context, m, s []byte) (any, error) { return app.agent.Apply(ctx, m, s) },
	} {
		_, err := f(t.Context(), []byte(priv), nil)
		if !fault.Is(err, fault.Forbidden) {
			t.Fatalf("privileged manifest: %v, want a forbidden error", err)
		}
		for _, want := range []string{`module "root"`, "Privileged", "CapAdd", "seccomp=unconfined", "agent.allowElevatedPermissions"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("refusal %q lacks %q", err, want)
			}
		}
	}
	if ids := containerIDs(t, cfg.Agent.ContainerPrefix); ids != "" {
		t.Fatalf("a refused manifest made containers: %s", ids)
	}

	// A module may bind its own data dir, and devices pass.
	own := filepath.Join(cfg.DataDir, "modules", "cam")
	ok := fmt.Sprintf(`version: "3"
modules:
  cam:
    image: %s
    imagePullPolicy: never
    createOptions: {HostConfig: {Binds: ["%s:/data"], Devices: [{PathOnHost: /dev/null, PathInContainer: /dev/video0, CgroupPermissions: rwm}]}}
`, image, own)
	if _, err := app.agent.Apply(t.Context(), []byte(ok), nil); err != nil {
		t.Fatalf("a module binding its own data dir: %v", err)
	}
	waitUntil(t, 60*time.Second, "cam running", func() bool {
		return app.agent.Reported().Modules["cam"].RuntimeStatus == "running"
	})
	if logs := dockerLogs(cfg.Agent.ContainerPrefix + "cam"); strings.Contains(logs, "READ-SHADOW") {
		t.Errorf("cam read the host's shadow file:\n%s", logs)
	}
}

// signedEnvelope signs a manifest into the one-document form a topic
// carries.
func signedEnvelope(t *testing.T, privPEM []byte, manifest string) []byte {
	t.Helper()
	priv, err := agent.ParsePrivateKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	sig := agent.Sign(priv, []byte(manifest))
	b, _ := json.Marshal(agent.Envelope{Manifest: manifest, Signature: &sig})
	return b
}

// unversionedAzure is an Azure manifest, which may come without a version.
const unversionedAzure = `{"modulesContent": {"$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "runtime": {"type": "docker", "settings": {}}, "systemModules": {}, "modules": {}}},
  "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {}, "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}}}}}`

// TestRemoteDeploymentsSignedAndVersioned (finding 2): with trusted keys,
// a signed manifest from upstream without a version does not override a
// newer versioned one, and an older signed one replayed is refused, also
// after a restart; each refusal is reported. Without trusted keys, ledge
// warns once at start that remote deployments are unsigned, the reported
// state says so, and a deployment applied before signing was turned on is
// flagged.
func TestRemoteDeploymentsSignedAndVersioned(t *testing.T) {
	privPEM, pubPEM, _, err := agent.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	key, _ := agent.PublicKeyBase64(pubPEM)
	broker := startMosquitto(t)

	// Unsigned first: the warning, and an unsigned deployment from upstream.
	u := runUpstreamAppliance(t, broker, nil)
	topic := "ledge/" + u.cfg.DeviceID + "/deployment"
	waitUntil(t, 10*time.Second, "the unsigned warning", func() bool { return strings.Contains(u.logs.String(), "not signed") })
	if n := strings.Count(u.logs.String(), "remote deployments are not signed"); n != 1 {
		t.Errorf("warned %d times that remote deployments are unsigned, want once:\n%s", n, u.logs)
	}
	if s := u.app.agent.Reported().Signing; s == nil || s.Required || len(s.RemoteSources) == 0 || !strings.Contains(s.Warning, "agent.trustedKeys") {
		t.Errorf("reported signing without keys: %+v", s)
	}
	publishUpstream(t, broker, topic, []byte("version: \"1\"\n"))
	waitUntil(t, 20*time.Second, "the unsigned v1 applied", func() bool {
		d := u.app.agent.Reported().Deployment
		return d != nil && d.Version == "1"
	})
	u.stop()

	// Signing turned on: the running deployment is flagged.
	cfg := u.cfg
	cfg.Agent.TrustedKeys = []string{key}
	u = startAppliance(t, cfg)
	waitUntil(t, 10*time.Second, "the flag on the unsigned deployment", func() bool {
		d := u.app.agent.Reported().Deployment
		return d != nil && d.Unsigned != ""
	})
	waitUntil(t, 10*time.Second, "a warning about the unsigned deployment in the log", func() bool {
		return strings.Contains(u.logs.String(), "before signing was turned on")
	})
	if s := u.app.agent.Reported().Signing; s == nil || !s.Required || s.Warning != "" {
		t.Errorf("reported signing with keys: %+v", s)
	}

	publishUpstream(t, broker, topic, signedEnvelope(t, privPEM, "version: \"5\"\n"))
	waitUntil(t, 20*time.Second, "signed v5 applied", func() bool {
		d := u.app.agent.Reported().Deployment
		return d != nil && d.Version == "5" && d.Signer != "" && d.Unsigned == ""
	})
	for _, tc := range []struct{ manifest, want string }{
		{unversionedAzure, "must carry a version"},            // signed, no version: must not override 5
		{"version: \"3\"\n", `\"3\" is not newer than \"5\"`}, // an older signed one replayed
	} {
		publishUpstream(t, broker, topic, signedEnvelope(t, privPEM, tc.manifest))
		waitUntil(t, 20*time.Second, "the refusal of "+tc.manifest, func() bool {
			r := u.app.agent.Reported()
			return r.Rejected != nil && strings.Contains(u.logs.String(), tc.want) || r.Deployment.Version != "5"
		})
		if r := u.app.agent.Reported(); r.Deployment.Version != "5" {
			t.Fatalf("signed %q replaced version 5: now %q (%s)", tc.manifest, r.Deployment.Version, r.Deployment.Source)
		}
	}

	// The floor survives a restart, even when the API went back meanwhile.
	priv, _ := agent.ParsePrivateKey(privPEM)
	back := "version: \"2\"\n"
	sig := agent.Sign(priv, []byte(back))
	sigJSON, _ := json.Marshal(sig)
	if _, err := u.app.agent.Apply(t.Context(), []byte(back), sigJSON); err != nil {
		t.Fatal(err)
	}
	u.stop()
	u = startAppliance(t, cfg)
	publishUpstream(t, broker, topic, signedEnvelope(t, privPEM, "version: \"4\"\n"))
	waitUntil(t, 20*time.Second, "the refusal of 4 after the restart", func() bool {
		r := u.app.agent.Reported()
		return r.Rejected != nil && strings.Contains(u.logs.String(), `\"4\" is not newer than \"5\"`) || r.Deployment != nil && r.Deployment.Version == "4"
	})
	if d := u.app.agent.Reported().Deployment; d.Version != "2" {
		t.Fatalf("after a restart, signed 4 (older than the 5 seen) replaced 2: now %q", d.Version)
	}
}

// TestDeploymentsPageSaysUnsigned (finding 2, the Deployments page): with
// the upstream MQTT source and no trusted keys, the page says that remote
// deployments are not signed, also once an unsigned deployment from
// upstream runs (not flagged: signing is off). Restarted on the same data
// dir with agent.trustedKeys, the notice is gone and that deployment is
// flagged as applied before signing was turned on.
func TestDeploymentsPageSaysUnsigned(t *testing.T) {
	_, pubPEM, _, err := agent.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	key, _ := agent.PublicKeyBase64(pubPEM)
	broker := startMosquitto(t)
	u := runUpstreamAppliance(t, broker, nil)
	password := u.app.FirstAdminPassword()
	if password == "" {
		t.Fatal("the first start made no admin password")
	}
	trust := `document.querySelector("#trust-warning")`

	ctx := testenv.Browser(t)
	base := "http://" + u.app.webAddr()
	login(t, ctx, base, password)
	waitOverview(t, ctx)
	navigate(t, ctx, base+"/deployments")
	wait(t, ctx, "the unsigned notice", `!`+trust+`.hidden && `+trust+`.textContent.includes("not signed")`, 10*time.Second)
	if txt := evalString(t, ctx, trust+`.textContent`); !strings.Contains(txt, "agent.trustedKeys") || strings.Contains(txt, "before signing") {
		t.Errorf("Deployments page without trusted keys warns %q", txt)
	}

	// An unsigned deployment from upstream: applied; the notice stays, no flag.
	publishUpstream(t, broker, "ledge/"+u.cfg.DeviceID+"/deployment", []byte("version: \"1\"\n"))
	wait(t, ctx, "the unsigned v1 on the page", `document.querySelector("#cur-version").textContent === "1" && document.querySelector("#cur-meta").textContent.includes("from ")`, 20*time.Second)
	if txt := evalString(t, ctx, trust+`.textContent`); !strings.Contains(txt, "not signed") || strings.Contains(txt, "before signing") {
		t.Errorf("Deployments page with an unsigned deployment and no trusted keys warns %q", txt)
	}
	testenv.Screenshot(t, ctx, "deployments-unsigned")
	u.stop()

	// Signing turned on (same data dir): the notice is gone, v1 is flagged.
	cfg := u.cfg
	cfg.Agent.TrustedKeys = []string{key}
	u = startAppliance(t, cfg)
	base = "http://" + u.app.webAddr()
	navigate(t, ctx, base+"/deployments")
	if evalString(t, ctx, `location.pathname`) == "/login" { // sessions are kept in the database; log in again should that change
		login(t, ctx, base, password)
		waitOverview(t, ctx)
		navigate(t, ctx, base+"/deployments")
	}
	wait(t, ctx, "v1 flagged as applied before signing", `document.querySelector("#cur-version").textContent === "1" && !`+trust+`.hidden && `+trust+`.textContent.includes("before signing was turned on")`, 20*time.Second)
	if txt := evalString(t, ctx, trust+`.textContent`); strings.Contains(txt, "not signed") || !strings.Contains(txt, "unsigned") {
		t.Errorf("Deployments page with trusted keys warns %q, want only the flag on the unsigned deployment", txt)
	}
	testenv.Screenshot(t, ctx, "deployments-applied-before-signing")
}

// TestElevatedModuleAllowedIsShown (finding 1, the loosened policy): with
// agent.allowElevatedPermissions, a module asking for a capability runs;
// the plan lists the elevated settings (API and Deployments page), the
// module is marked on the Modules page, and the Deployments page says
// that remote deployments are unsigned.
func TestElevatedModuleAllowedIsShown(t *testing.T) {
	image := "ledge-test/attacker:" + runID()
	buildAttackerImage(t, image)
	d := startDashboard(t, func(c *Config) {
		c.Agent.AllowElevatedPermissions = true
		c.Hub.Upstream = hub.UpstreamConfig{Mode: "mqtt", URL: "tcp://127.0.0.1:1", TopicTemplate: "cloud/{deviceId}/{sourceModule}"}
	})
	manifest := fmt.Sprintf("version: \"1\"\nmodules:\n  netadm: {image: %s, imagePullPolicy: never, createOptions: {HostConfig: {CapAdd: [NET_ADMIN]}}}\n", image)
	plan, err := d.app.agent.Check(t.Context(), []byte(manifest), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Elevated) != 1 || plan.Elevated[0].Setting != "HostConfig.CapAdd" || plan.Elevated[0].Module != "netadm" {
		t.Fatalf("plan's elevated settings: %+v", plan.Elevated)
	}

	ctx := testenv.Browser(t)
	login(t, ctx, d.base, testPassword)
	waitOverview(t, ctx)
	navigate(t, ctx, d.base+"/deployments")
	err = chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.ID("manifest")),
		chromedp.SetValue(chromedp.ID("manifest"), manifest),
		chromedp.Click(chromedp.ID("check")),
	)
	if err != nil {
		t.Fatal(err)
	}
	wait(t, ctx, "the elevated settings in the plan", `document.querySelector("#plan-elevated") !== null`, 10*time.Second)
	if txt := evalString(t, ctx, `document.querySelector("#plan-elevated").textContent`); !strings.Contains(txt, "netadm") || !strings.Contains(txt, "CapAdd") {
		t.Errorf("plan's elevated list says %q", txt)
	}
	wait(t, ctx, "the unsigned warning", `!document.querySelector("#trust-warning").hidden`, 10*time.Second)
	if txt := evalString(t, ctx, `document.querySelector("#trust-warning").textContent`); !strings.Contains(txt, "not signed") || !strings.Contains(txt, "agent.trustedKeys") {
		t.Errorf("Deployments page warns %q", txt)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("apply"))); err != nil {
		t.Fatal(err)
	}
	wait(t, ctx, "the apply result", `document.querySelector("#apply-result").className === "result-ok"`, 10*time.Second)
	testenv.Screenshot(t, ctx, "deployments-elevated")

	navigate(t, ctx, d.base+"/modules")
	wait(t, ctx, "netadm marked elevated on the Modules page",
		`[...document.querySelectorAll("#modules tbody tr")].some(r => r.textContent.includes("netadm") && r.textContent.includes("elevated") && r.textContent.includes("running"))`, 60*time.Second)
	testenv.Screenshot(t, ctx, "modules-elevated")
	if m := d.app.agent.Reported().Modules["netadm"]; len(m.Elevated) != 1 || !strings.Contains(m.Elevated[0], "NET_ADMIN") {
		t.Errorf("reported module: elevated %v", m.Elevated)
	}
}
