package appliance

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"ledge/agent"
	"ledge/hub"
	"ledge/hub/azure"
	"ledge/internal/fault"
)

// runningApp is an appliance running until stop (or the test's end).
type runningApp struct {
	*App
	cancel context.CancelFunc
	done   chan error
	logs   *syncBuffer // its log, at debug
}

func runApp(t *testing.T, cfg Config) *runningApp {
	t.Helper()
	logs := &syncBuffer{}
	app, err := New(t.Context(), cfg, BuildInfo{Version: "test"}, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningApp{App: app, cancel: cancel, done: make(chan error, 1), logs: logs}
	go func() { r.done <- app.Run(ctx) }()
	t.Cleanup(r.stop)
	return r
}

func (r *runningApp) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	<-r.done
	r.Close()
	r.cancel = nil
}

// freeLoopbackPort is a port nobody listens on now.
func freeLoopbackPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// setTwins writes an Azure manifest's modulesContent into device's twins
// at the parent, as `ledge twin set-modules` does.
func setTwins(t *testing.T, parent *hub.Hub, device, manifest string) {
	t.Helper()
	twins, err := agent.TwinsOf([]byte(manifest))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{agent.TwinEdgeHub, "$ledge", agent.TwinEdgeAgent} {
		var m map[string]any
		if raw := twins[id]; raw != nil {
			json.Unmarshal(raw, &m)
		}
		if _, err := parent.SetDesired(t.Context(), device+"/"+id, m); err != nil {
			t.Fatal(err)
		}
	}
}

func azureDeployment(version, image string, modules ...string) string {
	var mods []string
	for i, m := range modules {
		mods = append(mods, fmt.Sprintf(`%q: {"version": "1", "type": "docker", "status": "running", "restartPolicy": "always", "imagePullPolicy": "never", "startupOrder": %d,
      "settings": {"image": %q, "createOptions": "{\"Cmd\":[\"receiver\"]}"}}`, m, i, image))
	}
	return `{"modulesContent": {
  "$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "runtime": {"type": "docker", "settings": {"minDockerVersion": "v1.25"}},
    "systemModules": {"edgeAgent": {"type": "docker", "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.5"}},
      "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always", "settings": {"image": "mcr.microsoft.com/azureiotedge-hub:1.5"}}},
    "modules": {` + strings.Join(mods, ",\n") + `}}},
  "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {"up": "FROM /messages/* INTO $upstream"},
    "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}}},
  "$ledge": {"properties.desired": {"version": "` + version + `"}}}}`
}

// reportedModule is a module's runtimeStatus in the parent's $edgeAgent
// twin of device.
func reportedModule(t *testing.T, parent *hub.Hub, device, module string) (status string, code any) {
	tw, err := parent.GetTwin(t.Context(), device+"/$edgeAgent")
	if err != nil {
		return "", nil
	}
	mods, _ := tw.Reported["modules"].(map[string]any)
	m, _ := mods[module].(map[string]any)
	st, _ := tw.Reported["lastDesiredStatus"].(map[string]any)
	s, _ := m["runtimeStatus"].(string)
	return s, st["code"]
}

// TestParentLedgeDeploys: a second ledge is the parent (it speaks the IoT
// Hub device API). A deployment written into the child's $edgeAgent,
// $edgeHub and $ledge twins there runs on the child, which reports in its
// $edgeAgent twin; a direct method, a C2D message and desired properties
// from the parent reach a leaf device behind the child. The parent goes
// away: the child runs on, its leaf reads the last known desired
// properties, and the child restarts with the parent away (its last
// deployment runs again, the container adopted). The parent comes back:
// the same twins change nothing, what was set while the child was away
// reaches the leaf, methods work again, and a new deployment goes
// through.
func TestParentLedgeDeploys(t *testing.T) {
	id := runID()
	image := "ledge-test/mqttmod:" + id
	buildModuleImage(t, image)

	parentAddr := freeLoopbackPort(t)
	pcfg := testConfig(t)
	pcfg.DeviceID = "parent-" + id
	pcfg.Hub.Hostname = "parent-" + id
	pcfg.Hub.Listen = hub.ListenConfig{MQTT: "127.0.0.1:0", MQTTS: parentAddr}
	pcfg.Agent.Enabled = false
	parent := runApp(t, pcfg)
	childID := "gw-" + id
	child, err := parent.Hub().AddIdentity(t.Context(), hub.IdentitySpec{Name: childID})
	if err != nil {
		t.Fatal(err)
	}

	ccfg := testConfig(t)
	ccfg.DeviceID = childID
	ccfg.Hub.Hostname = "child-" + id
	// Fixed ports: the modules' environment names them, and a restart
	// must not change what their containers are made of.
	ccfg.Hub.Listen = hub.ListenConfig{MQTT: freeLoopbackPort(t), MQTTS: freeLoopbackPort(t)}
	ccfg.Hub.Upstream = hub.UpstreamConfig{Mode: "azure", Host: pcfg.Hub.Hostname, URL: "ssl://" + parentAddr, DeviceKey: child.PrimaryKey,
		CAFile: parent.Hub().CAPath(), KeepAlive: 5 * time.Second, Relay: true}
	ccfg.Agent.Network = "ledge-test-" + id
	ccfg.Agent.ContainerPrefix = "t" + id + "-"
	ccfg.Agent.Rollback.StableFor = time.Second
	t.Cleanup(func() {
		removeTestModules(ccfg)
	})
	if _, err := parent.Hub().AddIdentity(t.Context(), hub.IdentitySpec{Name: "sensor-" + id, Parent: childID}); err != nil {
		t.Fatal(err)
	}
	c := runApp(t, ccfg)
	leaf := connectLeaf(t, c.Hub(), "sensor-"+id)

	setTwins(t, parent.Hub(), childID, azureDeployment("1", image, "web"))
	waitUntil(t, 90*time.Second, "deployment 1 from the parent's twins, reported there", func() bool {
		d := c.agent.Reported().Deployment
		st, code := reportedModule(t, parent.Hub(), childID, "web")
		return d != nil && d.Version == "1" && d.Source == agent.SourceParent && d.State == agent.StateConverged && st == "running" && code == 200.0
	})
	tw, _ := parent.Hub().GetTwin(t.Context(), childID+"/$edgeAgent")
	if tw.Reported["schemaVersion"] != "1.0" || tw.Reported["lastDesiredVersion"] == nil || tw.Reported["runtime"] == nil {
		t.Errorf("the $edgeAgent reported properties lack Azure's fields: %v", tw.Reported)
	}
	// $edgeHub reports its routes applied, with its twin's $version.
	waitUntil(t, 30*time.Second, "the $edgeHub reported properties at the parent", func() bool {
		tw, err := parent.Hub().GetTwin(t.Context(), childID+"/$edgeHub")
		if err != nil {
			return false
		}
		st, _ := tw.Reported["lastDesiredStatus"].(map[string]any)
		return st["code"] == 200.0 && tw.Reported["schemaVersion"] == "1.1" && tw.Reported["lastDesiredVersion"] != nil
	})
	if c.hub.Stats().Upstream.State != "connected" {
		t.Errorf("the child's upstream: %+v", c.hub.Stats().Upstream)
	}
	depID := c.agent.Reported().Deployment.ID
	webID := containerIDs(t, ccfg.Agent.ContainerPrefix+"web")

	// The leaf behind the child, from the parent: a direct method, a C2D
	// message, desired properties.
	leaf.methodFromParent(t, parent.Hub())
	if err := parent.Hub().SendC2D(t.Context(), leaf.name, []byte("from the parent"), map[string]string{"k": "v"}); err != nil {
		t.Fatalf("C2D through the child: %v", err)
	}
	leaf.wait(t, "the C2D message at the leaf", func(topic, body string) bool {
		return strings.HasPrefix(topic, "devices/"+leaf.name+"/messages/devicebound/") && body == "from the parent"
	})
	if _, err := parent.Hub().PatchDesired(t.Context(), leaf.name, []byte(`{"threshold": 2}`)); err != nil {
		t.Fatal(err)
	}
	leaf.wait(t, "the desired patch at the leaf", func(topic, body string) bool {
		return strings.HasPrefix(topic, "$iothub/twin/PATCH/properties/desired/") && strings.Contains(body, `"threshold":2`)
	})

	// The parent goes away: the child runs on, and its leaf reads the
	// last known desired properties.
	parent.stop()
	waitUntil(t, 30*time.Second, "the child seeing its parent gone", func() bool { return c.hub.Stats().Upstream.State != "connected" })
	if r := c.agent.Reported(); r.Modules["web"].RuntimeStatus != "running" || r.Deployment.ID != depID {
		t.Errorf("without the parent: %+v", r.Deployment)
	}
	if d := leaf.getTwin(t); !strings.Contains(d, `"threshold":2`) {
		t.Errorf("the leaf's twin with the parent away: %s", d)
	}

	// The child restarts with the parent away: its deployment runs again,
	// the container adopted as it is.
	c.stop()
	c = runApp(t, ccfg)
	waitUntil(t, 60*time.Second, "the persisted deployment after a restart without the parent", func() bool {
		r := c.agent.Reported()
		return r.Deployment != nil && r.Deployment.ID == depID && r.Deployment.State == agent.StateConverged && r.Modules["web"].RuntimeStatus == "running"
	})
	if got := containerIDs(t, ccfg.Agent.ContainerPrefix+"web"); got != webID {
		t.Errorf("the module was recreated by the restart: %s, was %s", got, webID)
	}

	// The leaf reconnects by itself, as a device behind a gateway does (a
	// second client with its client id would take the connection from it
	// in turns, and lose the answers to the twin reads).
	if d := leaf.getTwin(t); !strings.Contains(d, `"threshold":2`) {
		t.Errorf("the leaf's twin after the child restarted with the parent away: %s", d)
	}

	// The parent comes back: the same twins deploy nothing new; what it
	// sends reaches the leaf again.
	ignoredRe := regexp.MustCompile(`msg="remote manifest ignored" .*source=parent`)
	ignored := len(ignoredRe.FindAllString(c.logs.String(), -1))
	parent = runApp(t, pcfg)
	if _, err := parent.Hub().PatchDesired(t.Context(), leaf.name, []byte(`{"threshold": 9}`)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 60*time.Second, "the child reconnected", func() bool { return c.hub.Stats().Upstream.State == "connected" })
	waitUntil(t, 30*time.Second, "the $edgeAgent twin read again", func() bool {
		for _, r := range c.hub.Stats().Upstream.Relays {
			if r.Identity == childID+"/$edgeAgent" && r.State == "connected" {
				return true
			}
		}
		return false
	})
	waitUntil(t, 30*time.Second, "the agent to take the same twins again (and ignore them)", func() bool {
		return len(ignoredRe.FindAllString(c.logs.String(), -1)) > ignored
	})
	if d := c.agent.Reported().Deployment; d.ID != depID {
		t.Errorf("the same twins made a new deployment: %+v", d)
	}
	waitUntil(t, 30*time.Second, "the desired properties set while the child was away, at the leaf", func() bool {
		return strings.Contains(leaf.getTwin(t), `"threshold":9`)
	})
	leaf.methodFromParent(t, parent.Hub())

	// A new deployment in the twins goes through, and is reported.
	setTwins(t, parent.Hub(), childID, azureDeployment("2", image, "web", "api"))
	waitUntil(t, 90*time.Second, "deployment 2 from the parent, reported", func() bool {
		d := c.agent.Reported().Deployment
		st, _ := reportedModule(t, parent.Hub(), childID, "api")
		return d != nil && d.Version == "2" && d.State == agent.StateConverged && st == "running"
	})
}

// leafClient is a device behind the child, speaking the IoT Hub device
// API to it (SAS over TLS, as an SDK does).
type leafClient struct {
	name string
	cli  paho.Client
	rid  atomic.Int64
	// connects counts connections; subscribed is the last one whose
	// subscriptions are acknowledged.
	connects, subscribed atomic.Int64

	mu   sync.Mutex
	msgs []string // "topic\x00body"
}

func connectLeaf(t *testing.T, h *hub.Hub, name string) *leafClient {
	t.Helper()
	creds, err := h.ShowIdentity(name)
	if fault.Is(err, fault.NotFound) {
		var c hub.Created
		c, err = h.AddIdentity(t.Context(), hub.IdentitySpec{Name: name})
		creds = c
	}
	if err != nil {
		t.Fatal(err)
	}
	l := &leafClient{name: name}
	pem, _ := os.ReadFile(h.CAPath())
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	o := paho.NewClientOptions().AddBroker(fmt.Sprintf("ssl://127.0.0.1:%d", h.Ports().MQTTS)).SetClientID(name).
		SetTLSConfig(&tls.Config{RootCAs: pool, ServerName: h.Hostname()}).SetAutoReconnect(true).SetCleanSession(true).
		SetConnectRetry(true).SetConnectRetryInterval(200 * time.Millisecond).SetMaxReconnectInterval(time.Second)
	o.SetCredentialsProvider(func() (string, string) {
		tok, _ := azure.BuildToken(azure.Resource(h.IoTHubHostname(), name, ""), creds.PrimaryKey, time.Now().Add(time.Hour))
		return h.IoTHubHostname() + "/" + name + "/?api-version=2021-04-12", tok
	})
	o.SetOnConnectHandler(func(c paho.Client) {
		n := l.connects.Add(1)
		tok := c.SubscribeMultiple(map[string]byte{"$iothub/methods/POST/#": 0, "$iothub/twin/res/#": 0,
			"$iothub/twin/PATCH/properties/desired/#": 0, "devices/" + name + "/messages/devicebound/#": 1}, func(c paho.Client, m paho.Message) {
			l.mu.Lock()
			l.msgs = append(l.msgs, m.Topic()+"\x00"+string(m.Payload()))
			l.mu.Unlock()
			if path, q, ok := strings.Cut(m.Topic(), "?"); ok && strings.HasPrefix(path, "$iothub/methods/POST/") {
				c.Publish("$iothub/methods/res/200/?"+q, 0, false, `{"pong":true}`)
			}
		})
		if tok.Wait() && tok.Error() == nil {
			for cur := l.subscribed.Load(); cur < n && !l.subscribed.CompareAndSwap(cur, n); cur = l.subscribed.Load() {
			}
		}
	})
	l.cli = paho.NewClient(o)
	if tok := l.cli.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("leaf connect: %v", tok.Error())
	}
	t.Cleanup(func() { l.cli.Disconnect(50) })
	return l
}

func (l *leafClient) wait(t *testing.T, what string, ok func(topic, body string) bool) string {
	t.Helper()
	var found string
	waitUntil(t, 30*time.Second, what, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, m := range l.msgs {
			topic, body, _ := strings.Cut(m, "\x00")
			if ok(topic, body) {
				found = body
				return true
			}
		}
		return false
	})
	return found
}

// getTwin asks the child for the leaf's twin and returns its desired
// properties (compact JSON).
func (l *leafClient) getTwin(t *testing.T) string {
	t.Helper()
	rid := fmt.Sprint(l.rid.Add(1) + 1000)
	// Connected and subscribed: a read sent before its subscription is
	// answered to nobody.
	waitUntil(t, 30*time.Second, "the leaf connected", func() bool {
		return l.cli.IsConnectionOpen() && l.subscribed.Load() == l.connects.Load()
	})
	l.cli.Publish("$iothub/twin/GET/?$rid="+rid, 0, false, "")
	body := l.wait(t, "the twin of the leaf", func(topic, body string) bool {
		return strings.HasPrefix(topic, "$iothub/twin/res/200/") && strings.Contains(topic, "$rid="+rid)
	})
	var tw struct{ Desired json.RawMessage }
	json.Unmarshal([]byte(body), &tw)
	var buf bytes.Buffer
	json.Compact(&buf, tw.Desired)
	return buf.String()
}

// methodFromParent calls a direct method on the leaf from the parent,
// through the child, once the child's relay for it is up.
func (l *leafClient) methodFromParent(t *testing.T, parent *hub.Hub) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		r, err := parent.InvokeMethod(t.Context(), l.name, "ping", json.RawMessage(`{}`), 5*time.Second)
		if err == nil && r.Status == 200 && string(r.Payload) == `{"pong":true}` {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a direct method from the parent at the leaf: %+v %v", r, err)
		}
	}
}
