package appliance

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"ledge/hub"
	"ledge/internal/testenv"
)

// azureSDKDir is where make deps installs the Azure IoT SDK for Node.
func azureSDKDir(t *testing.T) string {
	t.Helper()
	dir, _ := filepath.Abs(filepath.Join("testdata", "azure-sdk"))
	return testenv.NodePackages(t, dir, "azure-iot-device-mqtt")
}

// sdkModule is a stock Azure IoT SDK module (testdata/azure-sdk/module.js)
// running on the host; its JSON lines are collected.
type sdkModule struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []map[string]any
	raw   strings.Builder
}

func startSDKModule(t *testing.T, env []string) *sdkModule {
	t.Helper()
	dir := azureSDKDir(t)
	m := &sdkModule{cmd: exec.Command("node", "module.js")}
	m.cmd.Dir = dir
	m.cmd.Env = append(env, "PATH="+os.Getenv("PATH"), testenv.NodeIPv4First)
	out, err := m.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	m.cmd.Stderr = &lockedWriter{m: &m.mu, w: &m.raw}
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.cmd.Process.Kill(); m.cmd.Wait() })
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var line map[string]any
			m.mu.Lock()
			m.raw.WriteString(sc.Text() + "\n")
			if json.Unmarshal(sc.Bytes(), &line) == nil {
				m.lines = append(m.lines, line)
			}
			m.mu.Unlock()
		}
	}()
	return m
}

type lockedWriter struct {
	m *sync.Mutex
	w io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.m.Lock()
	defer l.m.Unlock()
	return l.w.Write(p)
}

// find returns the first line of event ev that ok accepts.
func (m *sdkModule) find(ev string, ok func(map[string]any) bool) map[string]any {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, l := range m.lines {
		if l["event"] == ev && (ok == nil || ok(l)) {
			return l
		}
	}
	return nil
}

func (m *sdkModule) output() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.raw.String()
}

// containerEnv is a container's environment and its binds, as docker
// inspect tells them.
func containerEnv(t *testing.T, name string) (env, binds []string) {
	t.Helper()
	out, err := testenv.DockerOutput("inspect", "--format", "{{json .Config.Env}}|{{json .HostConfig.Binds}}", name)
	if err != nil {
		t.Fatalf("docker inspect %s: %v %s", name, err, out)
	}
	e, b, _ := strings.Cut(strings.TrimSpace(string(out)), "|")
	json.Unmarshal([]byte(e), &env)
	json.Unmarshal([]byte(b), &binds)
	return env, binds
}

// moduleHostEnv is the environment the agent gave a module's container
// (docker inspect), for a module run on the host instead: the workload
// socket's folder and the hub's address, which only resolve inside
// containers, are swapped for the host's. It fails the test if the
// environment holds a key, or IOTEDGE_WORKLOADURI or
// IOTEDGE_GATEWAYHOSTNAME are not what edgeAgent sets.
func moduleHostEnv(t *testing.T, container string, h *hub.Hub) (env []string, socketDir string) {
	t.Helper()
	cenv, binds := containerEnv(t, container)
	for _, b := range binds {
		if src, dst, _ := strings.Cut(b, ":"); strings.HasPrefix(dst, "/var/run/iotedge") {
			socketDir = src
		}
	}
	if socketDir == "" {
		t.Fatalf("no workload socket folder among the binds %v", binds)
	}
	for _, kv := range cenv {
		k, v, _ := strings.Cut(kv, "=")
		switch {
		case strings.Contains(kv, "SharedAccessKey") || k == "EdgeHubConnectionString" || k == "IotHubConnectionString":
			t.Errorf("the container's environment holds a key: %s", k)
		case k == "IOTEDGE_WORKLOADURI":
			if v != "unix:///var/run/iotedge/workload.sock" {
				t.Errorf("IOTEDGE_WORKLOADURI=%s", v)
			}
			kv = "IOTEDGE_WORKLOADURI=unix://" + filepath.Join(socketDir, "workload.sock")
		case k == "IOTEDGE_GATEWAYHOSTNAME":
			_, port, _ := net.SplitHostPort(v)
			if port == "" || port != fmt.Sprint(h.Ports().MQTTS) {
				t.Errorf("IOTEDGE_GATEWAYHOSTNAME=%s, want the hub's host and MQTTS port %d", v, h.Ports().MQTTS)
			}
			kv = "IOTEDGE_GATEWAYHOSTNAME=localhost:" + port // the hub's name resolves in containers only
		}
		env = append(env, kv)
	}
	return env, socketDir
}

// startSDKApp runs an appliance (real Docker) for a stock SDK module
// named sdkmod, with the image the module's container is made from.
func startSDKApp(t *testing.T) (*App, Config, string) {
	t.Helper()
	id := runID()
	image := "ledge-test/mqttmod:" + id
	buildModuleImage(t, image)
	cfg := testConfig(t)
	cfg.DeviceID = "gw-" + id
	cfg.Hub.Hostname = "ledge-hub-" + id
	cfg.Agent.Network = "ledge-test-" + id
	cfg.Agent.ContainerPrefix = "t" + id + "-"
	cfg.Agent.Rollback.StableFor = time.Second
	app, err := New(t.Context(), cfg, BuildInfo{Version: "test"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		app.Close()
		removeTestModules(cfg)
	})
	return app, cfg, image
}

// TestAzureSDKModuleWorkloadAPI: a stock Azure IoT SDK module (Node,
// azure-iot-device + azure-iot-device-mqtt from npm) with no connection
// string: ModuleClient.fromEnvironment in edge mode, with the environment
// the agent gives its container (docker inspect), the container's two
// paths swapped for the host's (the workload socket's folder, and the
// hub's address), gets its trust bundle and SAS tokens from its workload
// socket, connects over TLS, reads its twin set by the deployment, sends
// on an output that a route delivers to another module's input, gets a
// desired patch and answers a direct method. The container's environment
// holds no key; the socket refuses to sign for another module.
func TestAzureSDKModuleWorkloadAPI(t *testing.T) {
	testenv.Docker(t)
	azureSDKDir(t)
	app, cfg, image := startSDKApp(t)

	// The route's destination: a plain MQTT module client of the test.
	h := app.Hub()
	rcv, err := h.AddIdentity(t.Context(), hub.IdentitySpec{Name: cfg.DeviceID + "/receiver"})
	if err != nil {
		t.Fatal(err)
	}
	recvCreds, _ := h.ShowIdentity(rcv.Name)
	got := make(chan string, 100)
	rc := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + h.Addr("tcp")).SetClientID(rcv.Name).
		SetUsername(rcv.Name).SetPassword(recvCreds.Password).SetOnConnectHandler(func(c paho.Client) {
		c.Subscribe(fmt.Sprintf("devices/%s/modules/receiver/inputs/#", cfg.DeviceID), 1, func(_ paho.Client, m paho.Message) {
			got <- m.Topic() + " " + string(m.Payload())
		})
	}))
	if tok := rc.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("receiver connect: %v", tok.Error())
	}
	defer rc.Disconnect(100)

	// The SDK module runs on the host: its container is made (for its
	// environment and socket) but stays stopped.
	manifest := fmt.Sprintf(`version: "1"
modules:
  sdkmod: {image: %s, imagePullPolicy: never, status: stopped}
routes:
  fromSdk: FROM /messages/modules/sdkmod/outputs/out INTO BrokeredEndpoint("/modules/receiver/inputs/in")
twins:
  sdkmod: {greeting: hello}
`, image)
	if _, err := app.agent.Apply(t.Context(), []byte(manifest), nil); err != nil {
		t.Fatal(err)
	}
	container := cfg.Agent.ContainerPrefix + "sdkmod"
	waitUntil(t, 60*time.Second, "the sdkmod container", func() bool {
		return app.agent.Reported().Modules["sdkmod"].ContainerID != ""
	})
	hostEnv, socketDir := moduleHostEnv(t, container, h)

	// Another module's signature, asked on sdkmod's socket: refused.
	wc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(socketDir, "workload.sock"))
	}}}
	resp, err := wc.Post("http://w/modules/receiver/genid/1/sign?api-version=2018-06-28", "application/json",
		strings.NewReader(`{"keyId":"primary","algo":"HMACSHA256","data":"aGk="}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "may only sign for itself") {
		t.Errorf("signing for another module: %d %s", resp.StatusCode, body)
	}

	m := startSDKModule(t, hostEnv)
	for deadline := time.Now().Add(60 * time.Second); m.find("twin", func(l map[string]any) bool {
		return strings.Contains(fmt.Sprint(l["desired"]), "greeting:hello")
	}) == nil; time.Sleep(100 * time.Millisecond) {
		if m.find("error", nil) != nil || time.Now().After(deadline) {
			t.Fatalf("the SDK module did not read its twin:\n%s\nenv: %v", m.output(), hostEnv)
		}
	}
	select {
	case msg := <-got:
		if !strings.Contains(msg, fmt.Sprintf("devices/%s/modules/receiver/inputs/in", cfg.DeviceID)) || !strings.Contains(msg, `"label":"person"`) {
			t.Errorf("the receiver got %q", msg)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no output of the SDK module reached the receiver's input through the route\n%s", m.output())
	}

	if _, err := h.PatchDesired(t.Context(), cfg.DeviceID+"/sdkmod", []byte(`{"threshold": 0.7}`)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 20*time.Second, "the desired patch at the SDK module", func() bool {
		return m.find("desired", func(l map[string]any) bool { return strings.Contains(fmt.Sprint(l["patch"]), "threshold:0.7") }) != nil
	})
	r, err := h.InvokeMethod(t.Context(), cfg.DeviceID+"/sdkmod", "echo", json.RawMessage(`{"x":1}`), 10*time.Second)
	if err != nil || r.Status != 200 || !strings.Contains(string(r.Payload), `"echoed":{"x":1}`) {
		t.Errorf("method echo: %+v %v\n%s", r, err, m.output())
	}
	tw, err := h.GetTwin(t.Context(), cfg.DeviceID+"/sdkmod")
	if err != nil || tw.Reported["sdk"] != "azure-iot-device" {
		t.Errorf("reported properties %v %v", tw.Reported, err)
	}
}
