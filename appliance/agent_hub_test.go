package appliance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ledge/hub"
	"ledge/internal/fault"
	"ledge/internal/testenv"
	"ledge/web"
)

// These tests run the appliance with the hub and the agent together
// against the real Docker engine and a real mosquitto upstream: the
// phase of issue 5 that needs the hub.

func runID() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// buildModuleImage builds the example module (deploy/examples/module)
// into a FROM scratch image.
func buildModuleImage(t *testing.T, tag string) {
	t.Helper()
	testenv.Docker(t)
	dir := t.TempDir()
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", filepath.Join(dir, "mod"), "../deploy/examples/module")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build module: %v\n%s", err, out)
	}
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nCOPY mod /mod\nENTRYPOINT [\"/mod\"]\n"), 0o644)
	if out, err := testenv.DockerOutput("build", "-q", "-t", tag, dir); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	t.Cleanup(func() { testenv.DockerOutput("rmi", "-f", tag) })
}

// startMosquitto runs a real mosquitto on a free loopback port.
func startMosquitto(t *testing.T) string {
	t.Helper()
	bin := testenv.Command(t, "mosquitto", "mosquitto")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	conf := filepath.Join(t.TempDir(), "mosquitto.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("user root\nlistener %d 127.0.0.1\nallow_anonymous true\n", port)), 0o644)
	cmd := exec.Command(bin, "-c", conf)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	waitUntil(t, 10*time.Second, "mosquitto listening", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return addr
}

func waitUntil(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	waitUntilExplained(t, d, what, ok, nil)
}

// waitUntilExplained is waitUntil that says, when it times out, what
// explain finds (the state of the parts waited on).
func waitUntilExplained(t *testing.T, d time.Duration, what string, ok func() bool, explain func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			if explain != nil {
				t.Fatalf("timed out after %s waiting for %s; %s", d, what, explain())
			}
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// dockerLogs returns a container's output.
func dockerLogs(name string) string {
	out, _ := testenv.DockerOutput("logs", name)
	return string(out)
}

// TestModulesThroughHubAndUpstream: a deployment delivered as a retained
// message on a real mosquitto (through the hub's upstream bridge) starts
// two paho modules that connect to the hub with the injected credentials;
// the sender's output reaches the receiver's input through the
// deployment's route, and the reported state goes back upstream. A later
// manifest with a route syntax error is refused and changes nothing.
func TestModulesThroughHubAndUpstream(t *testing.T) {
	id := runID()
	image := "ledge-test/mqttmod:" + id
	buildModuleImage(t, image)
	upstream := startMosquitto(t)

	cfg := testConfig(t)
	cfg.DeviceID = "gw-" + id
	cfg.Hub.Listen = hub.ListenConfig{MQTT: "0.0.0.0:0", MQTTS: "0.0.0.0:0"}
	cfg.Hub.Hostname = "ledge-hub-" + id
	cfg.Hub.Upstream = hub.UpstreamConfig{Mode: "mqtt", URL: "tcp://" + upstream, TopicTemplate: "cloud/{deviceId}/{sourceModule}"}
	cfg.Agent.Network = "ledge-test-" + id
	cfg.Agent.ContainerPrefix = "t" + id + "-"
	cfg.Agent.Rollback.StableFor = time.Second
	cfg.Agent.Restart.Unit = 200 * time.Millisecond
	app, err := New(t.Context(), cfg, BuildInfo{Version: "test"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		removeTestModules(cfg)
	})

	manifest := fmt.Sprintf(`version: "1"
modules:
  receiver: {image: %[1]s, imagePullPolicy: never, restartPolicy: always, startupOrder: 1, createOptions: {Cmd: [receiver]}}
  sender:   {image: %[1]s, imagePullPolicy: never, restartPolicy: always, startupOrder: 2, createOptions: {Cmd: [sender]}}
routes:
  people: FROM /messages/modules/sender/outputs/out WHERE $body.label = 'person' INTO BrokeredEndpoint("/modules/receiver/inputs/in")
`, image)
	pub := testenv.Command(t, "mosquitto_pub", "mosquitto-clients")
	host, port, _ := net.SplitHostPort(upstream)
	if out, err := exec.Command(pub, "-h", host, "-p", port, "-r", "-q", "1", "-t", "ledge/"+cfg.DeviceID+"/deployment", "-m", manifest).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v %s", err, out)
	}

	waitUntil(t, 60*time.Second, "both modules running", func() bool {
		r := app.agent.Reported()
		return r.Modules["sender"].RuntimeStatus == "running" && r.Modules["receiver"].RuntimeStatus == "running"
	})
	receiver := cfg.Agent.ContainerPrefix + "receiver"
	wantTopic := fmt.Sprintf("got devices/%s/modules/receiver/inputs/in", cfg.DeviceID)
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(dockerLogs(receiver), wantTopic) {
		if time.Now().After(deadline) {
			t.Fatalf("no sender message at the receiver's input after 30 s\nreceiver:\n%s\nsender:\n%s\nhub: %+v",
				dockerLogs(receiver), dockerLogs(cfg.Agent.ContainerPrefix+"sender"), app.hub.Stats())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if logs := dockerLogs(receiver); !strings.Contains(logs, `"label":"person"`) {
		t.Errorf("receiver logs lack the body:\n%s", logs)
	}

	// The reported state reaches the upstream broker (retained).
	sub := testenv.Command(t, "mosquitto_sub", "mosquitto-clients")
	var reported string
	waitUntil(t, 20*time.Second, "reported state upstream", func() bool {
		out, _ := exec.Command(sub, "-h", host, "-p", port, "-t", "ledge/"+cfg.DeviceID+"/deployment/reported", "-C", "1", "-W", "2").Output()
		reported = string(out)
		return strings.Contains(reported, `"receiver"`) && strings.Contains(reported, `"running"`)
	})

	// A manifest whose route does not parse is refused, naming the route
	// and the position, and nothing changes.
	before := containerIDs(t, cfg.Agent.ContainerPrefix)
	bad := strings.Replace(manifest, `version: "1"`, `version: "2"`, 1)
	bad = strings.Replace(bad, "WHERE $body.label = 'person'", "WHERE $body.label = = 'person'", 1)
	_, err = app.agent.Apply(t.Context(), []byte(bad), nil)
	if err == nil || !fault.Is(err, fault.Invalid) || !strings.Contains(err.Error(), `"people"`) || !strings.Contains(err.Error(), "offset") {
		t.Fatalf("bad route: %v", err)
	}
	if after := containerIDs(t, cfg.Agent.ContainerPrefix); after != before {
		t.Errorf("containers changed after a refused manifest: %s -> %s", before, after)
	}
	n := strings.Count(dockerLogs(receiver), wantTopic)
	waitUntil(t, 10*time.Second, "messages still routed after the refused manifest", func() bool {
		return strings.Count(dockerLogs(receiver), wantTopic) > n
	})
}

func containerIDs(t *testing.T, prefix string) string {
	out, err := testenv.DockerOutput("ps", "-q", "--no-trunc", "--filter", "name="+prefix)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(strings.Fields(string(out)), ",")
}

// TestModuleHubLink: the modules' reported state (Modules page, ledge
// status, deploy status) says whether each module is connected to the hub
// as <device>/<module>, and since when it is not: running is not
// connected.
func TestModuleHubLink(t *testing.T) {
	id := runID()
	image := "ledge-test/linkmod:" + id
	buildModuleImage(t, image)
	cfg := testConfig(t)
	cfg.DeviceID = "link-" + id
	cfg.Hub.Listen = hub.ListenConfig{MQTT: "0.0.0.0:0", MQTTS: "0.0.0.0:0"}
	cfg.Hub.Hostname = "ledge-hub-" + id
	cfg.Agent.Network = "ledge-test-" + id
	cfg.Agent.ContainerPrefix = "t" + id + "-"
	app, err := New(t.Context(), cfg, BuildInfo{Version: "test"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		removeTestModules(cfg)
	})
	manifest := fmt.Sprintf("version: \"1\"\nmodules:\n  receiver: {image: %s, imagePullPolicy: never, restartPolicy: never, createOptions: {Cmd: [receiver]}}\n", image)
	if _, err := app.agent.Apply(t.Context(), []byte(manifest), nil); err != nil {
		t.Fatal(err)
	}
	d := deployer{a: app.agent, hub: app.hub, device: cfg.DeviceID}
	link := func() *web.ModuleHubLink {
		rep, err := d.Status(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		mods, _ := d.Modules(t.Context())
		if a, b := rep.Modules["receiver"].Hub, mods["receiver"].Hub; (a == nil) != (b == nil) || a != nil && *a != *b {
			t.Fatalf("deployments/current and modules differ: %+v %+v", a, b)
		}
		return rep.Modules["receiver"].Hub
	}
	waitUntil(t, 30*time.Second, "the receiver reported", func() bool { _, ok := app.agent.Reported().Modules["receiver"]; return ok })
	if l := link(); l == nil || l.Identity != cfg.DeviceID+"/receiver" {
		t.Fatalf("hub link %+v, want identity %s/receiver", l, cfg.DeviceID)
	}
	waitUntil(t, 60*time.Second, "the receiver connected to the hub", func() bool { return link().Connected })
	if l := link(); !l.Seen || l.Since.IsZero() || time.Since(l.Since) > time.Minute {
		t.Errorf("connected link %+v, want since when it connected", l)
	}
	killed := time.Now()
	if out, err := testenv.DockerOutput("kill", cfg.Agent.ContainerPrefix+"receiver"); err != nil {
		t.Fatalf("docker kill: %v %s", err, out)
	}
	waitUntil(t, 30*time.Second, "the receiver shown not connected", func() bool { return !link().Connected })
	if l := link(); !l.Seen || l.Since.Before(killed.Add(-time.Second)) {
		t.Errorf("link after the kill %+v, want not connected since about %s", l, killed)
	}
}
