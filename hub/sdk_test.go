package hub

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"ledge/hub/azure"
	"ledge/internal/fault"
	"ledge/internal/testenv"
)

// sdkHub is a hub whose name resolves (localhost), so the connection
// strings it prints work as they are.
func sdkHub(t *testing.T, routes map[string]RouteConfig) *testHub {
	return startHub(t, func(c *Config) {
		c.Hostname = "localhost"
		c.Routes = routes
	}, false)
}

// TestSDKMethods: direct methods on stock SDK clients (a DeviceClient and
// a ModuleClient from the connection strings ledge prints): the answer's
// status and payload come back; a call without a payload reaches the
// handler as null (the SDK parses every request body as JSON, and answers
// 400 "Invalid request format" to an empty one); a handler slower than
// the timeout is 504, a method nobody handles too; a client that left is
// 404.
func TestSDKMethods(t *testing.T) {
	h := sdkHub(t, nil)
	dev := h.addIdentity(t, IdentitySpec{Name: "thermo"})
	mod := h.addIdentity(t, IdentitySpec{Name: testDevice + "/cam"})
	d := testenv.StartSDK(t, "thermo", testenv.SDKEnv{Kind: "device", CS: dev.ConnectionString, CA: h.CAPath(), Methods: "reboot:200:0,fail:500:0"})
	d.Must("open", nil)
	m := testenv.StartSDK(t, "cam", testenv.SDKEnv{Kind: "module", CS: mod.ConnectionString, CA: h.CAPath(), Methods: "echo:201:0,slow:200:3000"})
	m.Must("open", nil)
	// The SDKs subscribe to methods after open returns.
	waitSubscribed(t, h, "thermo", azure.MethodRequestTopic("reboot", "1"))
	waitSubscribed(t, h, testDevice+"/cam", azure.MethodRequestTopic("echo", "1"))
	for _, c := range []struct {
		target, method, payload string
		status                  int
		answer                  string
	}{
		{"thermo", "reboot", `{"delay":1}`, 200, `{"echoed":{"delay":1},"method":"reboot"}`},
		{"thermo", "reboot", ``, 200, `{"echoed":null,"method":"reboot"}`},
		{"thermo", "fail", `"x"`, 500, `{"echoed":"x","method":"fail"}`},
		{testDevice + "/cam", "echo", `[1,2]`, 201, `{"echoed":[1,2],"method":"echo"}`},
		{testDevice + "/cam", "echo", ``, 201, `{"echoed":null,"method":"echo"}`},
	} {
		r, err := h.InvokeMethod(t.Context(), c.target, c.method, json.RawMessage(c.payload), 10*time.Second)
		if err != nil || r.Status != c.status || string(r.Payload) != c.answer {
			t.Errorf("%s %s(%s): %d %s %v, want %d %s", c.target, c.method, c.payload, r.Status, r.Payload, err, c.status, c.answer)
		}
	}
	for _, method := range []string{"slow", "nobody"} {
		if _, err := h.InvokeMethod(t.Context(), testDevice+"/cam", method, nil, time.Second); !fault.Is(err, fault.Timeout) {
			t.Errorf("%s: %v, want a timeout (504)", method, err)
		}
	}
	d.Must("close", nil)
	waitFor(t, "thermo gone", func() bool { _, ok := h.byID.Load("thermo"); return !ok })
	if _, err := h.InvokeMethod(t.Context(), "thermo", "reboot", nil, time.Second); !fault.Is(err, fault.NotFound) {
		t.Errorf("a device that left: %v, want not found (404)", err)
	}
}

// TestSDKTwin: twins as a stock SDK client sees them. getTwin gives the
// desired and reported properties; a desired patch arrives with its
// $version; a reported update the hub takes succeeds and one it refuses
// fails at the SDK (the SDK ignores the status of a twin response and
// looks for an errorCode in its body, as IoT Hub sends it), for the
// reasons edgeHub refuses one (a key with '.', '$', '#' or a space,
// nesting deeper than 10, a string over 4 KB, an integer beyond ±2^52, a
// null in an array, over 32 KB), and changes nothing.
func TestSDKTwin(t *testing.T) {
	h := sdkHub(t, nil)
	dev := h.addIdentity(t, IdentitySpec{Name: "thermo"})
	if _, err := h.PatchDesired(t.Context(), "thermo", []byte(`{"interval": 5}`)); err != nil {
		t.Fatal(err)
	}
	d := testenv.StartSDK(t, "thermo", testenv.SDKEnv{Kind: "device", CS: dev.ConnectionString, CA: h.CAPath()})
	d.Must("open", nil)
	tw := d.Must("getTwin", nil)
	waitSubscribed(t, h, "thermo", azure.DesiredPatchTopic(1))
	if got := fmt.Sprint(tw["desired"]); got != "map[$version:1 interval:5]" {
		t.Errorf("desired at getTwin: %s", got)
	}
	if _, err := h.PatchDesired(t.Context(), "thermo", []byte(`{"interval": 7, "mode": "eco"}`)); err != nil {
		t.Fatal(err)
	}
	p := d.Wait("desired", func(l testenv.SDKLine) bool { return strings.Contains(fmt.Sprint(l["patch"]), "eco") })
	if got := fmt.Sprint(p["patch"]); got != "map[$version:2 interval:7 mode:eco]" {
		t.Errorf("desired patch: %s", got)
	}
	if _, err := d.Do("report", map[string]any{"patch": map[string]any{"fw": "1.2", "net": map[string]any{"rssi": -60}}}); err != nil {
		t.Fatalf("a reported update: %v", err)
	}
	deep := map[string]any{"v": 1}
	for range 10 {
		deep = map[string]any{"d": deep}
	}
	for name, patch := range map[string]map[string]any{
		"a key with a dot":        {"a.b": 1},
		"a key with $":            {"$x": 1},
		"a key with #":            {"a#": 1},
		"a key with a space":      {"a b": 1},
		"a nested key with a dot": {"net": map[string]any{"x.y": 1}},
		"nesting deeper than 10":  {"deep": deep},
		"a string over 4 KB":      {"s": strings.Repeat("x", 4097)},
		"an integer beyond 2^52":  {"n": json.Number("4503599627370496")},
		"a null in an array":      {"a": []any{1, nil}},
		"more than 32 KB":         {"big1": strings.Repeat("x", 4000), "big2": strings.Repeat("x", 4000), "big3": strings.Repeat("x", 4000), "big4": strings.Repeat("x", 4000), "big5": strings.Repeat("x", 4000), "big6": strings.Repeat("x", 4000), "big7": strings.Repeat("x", 4000), "big8": strings.Repeat("x", 4000), "big9": strings.Repeat("x", 4000)},
	} {
		if _, err := d.Do("report", map[string]any{"patch": patch}); err == nil {
			t.Errorf("%s: the SDK's reported update succeeded", name)
		}
	}
	got, err := h.GetTwin(t.Context(), "thermo")
	if err != nil || got.ReportedVersion != 1 || fmt.Sprint(got.Reported) != "map[fw:1.2 net:map[rssi:-60]]" {
		t.Errorf("reported here: %v (version %d) %v", got.Reported, got.ReportedVersion, err)
	}
}

// waitSubscribed waits until client name is subscribed to topic (an SDK
// subscribes in the background: to desired patches once a listener is
// registered, for instance).
func waitSubscribed(t testing.TB, h *testHub, name, topic string) {
	t.Helper()
	waitFor(t, name+" subscribed to "+topic, func() bool {
		v, ok := h.byID.Load(name)
		if !ok {
			return false
		}
		_, sub := subscribedQoS(v.(*session), topic)
		return sub
	})
}

// TestSDKMessages: telemetry, module outputs, module inputs and C2D as
// stock SDK clients send and see them. A DeviceClient's sendEvent with
// application properties (a key with a space, a value with / & =),
// messageId, correlationId, contentType and contentEncoding reaches a
// ModuleClient's input through a route with the same properties, plus the
// sender's device id ($.cdid, as edgeHub adds it); a module's
// sendOutputEvent is routed on its output name, a property and a $body
// query, and arrives with the sender's device and module ids; a C2D
// message reaches the device with its properties.
func TestSDKMessages(t *testing.T) {
	h := sdkHub(t, map[string]RouteConfig{
		"dev":  {Route: `FROM /messages WHERE NOT IS_DEFINED($connectionModuleId) INTO BrokeredEndpoint("/modules/sink/inputs/fromdevice")`},
		"out":  {Route: `FROM /messages/modules/cam/outputs/detections WHERE label = 'person' AND $body.score > 0.5 INTO BrokeredEndpoint("/modules/sink/inputs/people")`},
		"rest": {Route: `FROM /messages/modules/cam/outputs/* WHERE label <> 'person' INTO BrokeredEndpoint("/modules/sink/inputs/other")`},
	})
	dev := h.addIdentity(t, IdentitySpec{Name: "thermo"})
	cam := h.addIdentity(t, IdentitySpec{Name: testDevice + "/cam"})
	sink := h.addIdentity(t, IdentitySpec{Name: testDevice + "/sink"})
	s := testenv.StartSDK(t, "sink", testenv.SDKEnv{Kind: "module", CS: sink.ConnectionString, CA: h.CAPath()})
	s.Must("open", nil)
	waitSubscribed(t, h, testDevice+"/sink", "devices/"+testDevice+"/modules/sink/inputs/x/")
	d := testenv.StartSDK(t, "thermo", testenv.SDKEnv{Kind: "device", CS: dev.ConnectionString, CA: h.CAPath()})
	d.Must("open", nil)
	c := testenv.StartSDK(t, "cam", testenv.SDKEnv{Kind: "module", CS: cam.ConnectionString, CA: h.CAPath()})
	c.Must("open", nil)

	d.Must("send", map[string]any{"body": `{"t":21}`, "props": map[string]string{"temp": "21", "a b": "c/d&e=f"},
		"messageId": "m-1", "correlationId": "c-1", "contentType": "application/json", "contentEncoding": "utf-8"})
	c.Must("send", map[string]any{"output": "detections", "body": `{"score":0.9}`, "props": map[string]string{"label": "person"},
		"contentType": "application/json", "contentEncoding": "utf-8"})
	c.Must("send", map[string]any{"output": "detections", "body": `{"score":0.2}`, "props": map[string]string{"label": "person"},
		"contentType": "application/json", "contentEncoding": "utf-8"}) // $body.score too low: no route
	c.Must("send", map[string]any{"output": "other", "body": "x", "props": map[string]string{"label": "cat"}})

	for input, want := range map[string]string{
		"fromdevice": `{"body":"{\"t\":21}","contentEncoding":"utf-8","contentType":"application/json","correlationId":"c-1","event":"input","input":"fromdevice","messageId":"m-1","props":{"$.cdid":"thermo","a b":"c/d\u0026e=f","temp":"21"},"to":"","userId":""}`,
		"people":     `{"body":"{\"score\":0.9}","contentEncoding":"utf-8","contentType":"application/json","correlationId":"","event":"input","input":"people","messageId":"","props":{"$.cdid":"edge","$.cmid":"cam","label":"person"},"to":"","userId":""}`,
		"other":      `{"body":"x","correlationId":"","event":"input","input":"other","messageId":"","props":{"$.cdid":"edge","$.cmid":"cam","label":"cat"},"to":"","userId":""}`,
	} {
		l := s.Wait("input", func(l testenv.SDKLine) bool { return l.Str("input") == input })
		if b, _ := json.Marshal(l); string(b) != want {
			t.Errorf("input %s:\n got %s\nwant %s", input, b, want)
		}
	}
	if n := len(s.All("input", nil)); n != 3 {
		t.Errorf("%d messages at the inputs, want 3", n)
	}

	waitSubscribed(t, h, "thermo", "devices/thermo/messages/devicebound/x")
	if err := h.SendC2D(t.Context(), "thermo", []byte("led on"), map[string]string{"messageId": "c2d-1", "correlationId": "c-9", "k": "v w"}); err != nil {
		t.Fatal(err)
	}
	l := d.Wait("c2d", nil)
	if b, _ := json.Marshal(l); string(b) != `{"body":"led on","correlationId":"c-9","event":"c2d","messageId":"c2d-1","props":{"k":"v w"},"to":"","userId":""}` {
		t.Errorf("C2D: %s", b)
	}
}

// TestSDKReconnects: stock SDK clients keep working across what makes
// them connect again, and no message the hub acknowledged is lost. Their
// SAS tokens live 5 s: the SDK makes a new one and reconnects before each
// expires (the hub disconnects a client whose token expired); then the
// hub stops and starts again on the same ports: the SDK's retry policy
// connects again, re-subscribes, and sends what it could not send
// meanwhile. Every message the SDK was told was sent reaches the module's
// input; a desired patch and a direct method work after the restart.
func TestSDKReconnects(t *testing.T) {
	db := testenv.DB(t)
	dir := t.TempDir()
	mqtt, mqtts := freePort(t), freePort(t)
	cfg := func(c *Config) {
		c.Hostname = "localhost"
		c.Listen = ListenConfig{MQTT: fmt.Sprintf("127.0.0.1:%d", mqtt), MQTTS: fmt.Sprintf("127.0.0.1:%d", mqtts)}
		c.Routes = map[string]RouteConfig{"r": {Route: `FROM /messages INTO BrokeredEndpoint("/modules/sink/inputs/in")`}}
	}
	h := runHubOn(t, db, dir, cfg, false)
	conns := &connCounter{n: map[string]int{}}
	if err := h.srv.AddHook(conns, nil); err != nil {
		t.Fatal(err)
	}
	dev := h.addIdentity(t, IdentitySpec{Name: "thermo"})
	sink := h.addIdentity(t, IdentitySpec{Name: testDevice + "/sink"})
	s := testenv.StartSDK(t, "sink", testenv.SDKEnv{Kind: "module", CS: sink.ConnectionString, CA: h.CAPath(), TokenTTL: 5, Methods: "echo:200:0"})
	s.Must("open", nil)
	d := testenv.StartSDK(t, "thermo", testenv.SDKEnv{Kind: "device", CS: dev.ConnectionString, CA: h.CAPath(), TokenTTL: 5})
	d.Must("open", nil)
	d.Must("getTwin", nil)

	var mu sync.Mutex
	var sent []string // bodies whose send succeeded
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for n := 1; ; n++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			body := fmt.Sprint(n)
			if _, err := d.Do("send", map[string]any{"body": body}); err != nil {
				t.Errorf("send %s: %v", body, err)
				continue
			}
			mu.Lock()
			sent = append(sent, body)
			mu.Unlock()
		}
	})
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(sent) }
	delivered := func(body string) func(testenv.SDKLine) bool {
		return func(l testenv.SDKLine) bool { return l.Str("body") == body }
	}
	// Two token renewals each (every 5 s - 5/3 s): connections 2 and 3.
	deadline := time.Now().Add(30 * time.Second)
	for (conns.get("thermo") < 3 || conns.get(testDevice+"/sink") < 3) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if a, b := conns.get("thermo"), conns.get(testDevice+"/sink"); a < 3 || b < 3 {
		t.Fatalf("with a 5 s token, in 30 s the device connected %d times, the module %d", a, b)
	}

	h.stop()
	before := count()
	h = runHubOn(t, db, dir, cfg, false)
	for deadline := time.Now().Add(30 * time.Second); count() <= before+5; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the SDK sent nothing in 30 s after the hub started again")
		}
	}
	close(stop)
	wg.Wait()
	mu.Lock()
	last := sent[len(sent)-1]
	all := append([]string(nil), sent...)
	mu.Unlock()
	s.Wait("input", delivered(last))
	for _, body := range all {
		if len(s.All("input", delivered(body))) == 0 {
			t.Errorf("message %s was sent (acknowledged) and never delivered", body)
		}
	}
	t.Logf("%d messages sent and delivered across token renewals and a restart", len(all))

	waitSubscribed(t, h.testHub, "thermo", azure.DesiredPatchTopic(1))
	if _, err := h.PatchDesired(t.Context(), "thermo", []byte(`{"after": "restart"}`)); err != nil {
		t.Fatal(err)
	}
	d.Wait("desired", func(l testenv.SDKLine) bool { return strings.Contains(fmt.Sprint(l["patch"]), "after:restart") })
	waitSubscribed(t, h.testHub, testDevice+"/sink", azure.MethodRequestTopic("echo", "1"))
	if r, err := h.InvokeMethod(t.Context(), testDevice+"/sink", "echo", json.RawMessage(`1`), 10*time.Second); err != nil || r.Status != 200 {
		t.Errorf("method after the restart: %+v %v", r, err)
	}
}

// connCounter counts the connections each client id made (a test hook on
// mochi).
type connCounter struct {
	mqtt.HookBase
	mu sync.Mutex
	n  map[string]int
}

func (c *connCounter) ID() string           { return "test-conn-counter" }
func (c *connCounter) Provides(b byte) bool { return b == mqtt.OnSessionEstablished }
func (c *connCounter) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	c.mu.Lock()
	c.n[cl.ID]++
	c.mu.Unlock()
}

func (c *connCounter) get(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[id]
}

// TestSDKWebSocket: the SDK's MQTT-over-WebSocket transport (MqttWs),
// which always dials wss://<GatewayHostName>:443/$iothub/websocket,
// against hub.listen.websocket on port 443, with the connection string
// ledge prints (the hub's MQTT over TLS on 8883: no port in it): it
// opens, reads its twin, sends telemetry that a route delivers, gets C2D
// and answers a method.
func TestSDKWebSocket(t *testing.T) {
	h, _ := azurePortsHub(t, map[string]RouteConfig{"r": {Route: `FROM /messages INTO BrokeredEndpoint("/modules/sink/inputs/in")`}})
	dev := h.addIdentity(t, IdentitySpec{Name: "wsdev"})
	sink := h.addIdentity(t, IdentitySpec{Name: testDevice + "/sink"})
	s := testenv.StartSDK(t, "sink", testenv.SDKEnv{Kind: "module", Transport: "mqttws", CS: sink.ConnectionString, CA: h.CAPath()})
	s.Must("open", nil)
	d := testenv.StartSDK(t, "wsdev", testenv.SDKEnv{Kind: "device", Transport: "mqttws", CS: dev.ConnectionString, CA: h.CAPath(), Methods: "ping:200:0"})
	d.Must("open", nil)
	if tw := d.Must("getTwin", nil); fmt.Sprint(tw["desired"]) != "map[$version:0]" {
		t.Errorf("twin over WebSocket: %v", tw)
	}
	waitSubscribed(t, h, testDevice+"/sink", "devices/"+testDevice+"/modules/sink/inputs/in/")
	d.Must("send", map[string]any{"body": "over ws", "props": map[string]string{"k": "v"}})
	if l := s.Wait("input", nil); l.Str("body") != "over ws" || fmt.Sprint(l["props"]) != "map[$.cdid:wsdev k:v]" {
		t.Errorf("routed over WebSocket: %v", l)
	}
	waitSubscribed(t, h, "wsdev", "devices/wsdev/messages/devicebound/x")
	if err := h.SendC2D(t.Context(), "wsdev", []byte("c2d over ws"), nil); err != nil {
		t.Fatal(err)
	}
	d.Wait("c2d", func(l testenv.SDKLine) bool { return l.Str("body") == "c2d over ws" })
	waitSubscribed(t, h, "wsdev", azure.MethodRequestTopic("ping", "1"))
	if r, err := h.InvokeMethod(t.Context(), "wsdev", "ping", json.RawMessage(`{}`), 10*time.Second); err != nil || r.Status != 200 {
		t.Errorf("method over WebSocket: %+v %v", r, err)
	}
}

// azurePortsHub runs a hub on the ports the Azure SDKs dial (MQTT over
// TLS on 8883, WebSocket and HTTPS on 443), at a loopback address of the
// test's own (so tests running beside it do not collide), which is also
// its hostname: the connection strings it prints need no port.
func azurePortsHub(t *testing.T, routes map[string]RouteConfig) (*testHub, string) {
	t.Helper()
	var lastErr error
	for range 50 {
		host := fmt.Sprintf("127.%d.%d.%d", 1+rand.IntN(254), rand.IntN(256), 1+rand.IntN(254))
		free := true
		for _, port := range []string{"443", "8883"} {
			l, err := net.Listen("tcp", net.JoinHostPort(host, port))
			if err != nil {
				free, lastErr = false, err
				break
			}
			l.Close()
		}
		if free {
			return startHub(t, func(c *Config) {
				c.Hostname = host
				c.Listen = ListenConfig{MQTT: host + ":0", MQTTS: host + ":8883", WebSocket: host + ":443"}
				c.Routes = routes
			}, false), host
		}
	}
	t.Fatalf("no loopback address with ports 443 and 8883 free (port 443 needs root or CAP_NET_BIND_SERVICE): %v", lastErr)
	return nil, ""
}

// TestSDKModuleToModuleMethods: ModuleClient.invokeMethod, which POSTs to
// https://<GatewayHostName>/twins/<device>/modules/<module>/methods as
// edgeHub serves it (with the caller's SAS token and x-ms-edge-moduleId),
// reaches the target module's method handler and brings back its status
// and payload; a target that is not connected is an error (404), one that
// does not answer in time too (504). A request without a valid token of
// the module it names, or from a module of another device, is refused
// (401), one without x-ms-edge-moduleId too (400).
func TestSDKModuleToModuleMethods(t *testing.T) {
	h, host := azurePortsHub(t, nil)
	cam := h.addIdentity(t, IdentitySpec{Name: testDevice + "/cam"})
	ctl := h.addIdentity(t, IdentitySpec{Name: testDevice + "/ctl"})
	c := testenv.StartSDK(t, "cam", testenv.SDKEnv{Kind: "module", CS: cam.ConnectionString, CA: h.CAPath(), Methods: "echo:201:0,slow:200:3000"})
	c.Must("open", nil)
	waitSubscribed(t, h, testDevice+"/cam", azure.MethodRequestTopic("echo", "1"))
	m := testenv.StartSDK(t, "ctl", testenv.SDKEnv{Kind: "module", CS: ctl.ConnectionString, CA: h.CAPath()})
	m.Must("open", nil)

	r, err := m.Do("invoke", map[string]any{"device": testDevice, "module": "cam", "method": "echo", "payload": map[string]any{"x": 1}})
	if b, _ := json.Marshal(r); err != nil || string(b) != `{"payload":{"echoed":{"x":1},"method":"echo"},"status":201}` {
		t.Errorf("invoke echo: %s %v", b, err)
	}
	if _, err := m.Do("invoke", map[string]any{"device": testDevice, "module": "gone", "method": "echo"}); err == nil || !strings.Contains(err.Error(), "[DeviceNotFoundError]") {
		t.Errorf("invoke on a module that is not connected: %v, want DeviceNotFoundError (404)", err)
	}
	if _, err := m.Do("invoke", map[string]any{"device": testDevice, "module": "cam", "method": "slow", "timeout": 1}); err == nil || !strings.Contains(err.Error(), "[GatewayTimeoutError]") {
		t.Errorf("invoke a method slower than its timeout: %v, want GatewayTimeoutError (504)", err)
	}

	// Requests the SDK would not make.
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(h.CAPath())
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	other := h.addIdentity(t, IdentitySpec{Name: "other/mod"})
	call := func(actor, token string) int {
		req, _ := http.NewRequest("POST", "https://"+host+"/twins/"+testDevice+"/modules/cam/methods?api-version=2021-04-12",
			strings.NewReader(`{"methodName":"echo","responseTimeoutInSeconds":5,"payload":1}`))
		if actor != "" {
			req.Header.Set("x-ms-edge-moduleId", actor)
		}
		req.Header.Set("Authorization", token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	tok := func(device, module, key string) string {
		tk, err := azure.BuildToken(azure.Resource(host, device, module), key, time.Now().Add(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		return tk
	}
	for _, c := range []struct {
		what, actor, token string
		want               int
	}{
		{"ctl's token", testDevice + "/ctl", tok(testDevice, "ctl", ctl.PrimaryKey), 200},
		{"cam's token as ctl", testDevice + "/ctl", tok(testDevice, "cam", cam.PrimaryKey), 401},
		{"a token signed with another key", testDevice + "/ctl", tok(testDevice, "ctl", cam.PrimaryKey), 401},
		{"no token", testDevice + "/ctl", "", 401},
		{"a module of another device", "other/mod", tok("other", "mod", other.PrimaryKey), 401},
		{"no x-ms-edge-moduleId", "", tok(testDevice, "ctl", ctl.PrimaryKey), 400},
	} {
		if got := call(c.actor, c.token); got != c.want {
			t.Errorf("%s: %d, want %d", c.what, got, c.want)
		}
	}
}

// TestSDKLeafBehindChild: a stock SDK leaf device behind a child ledge,
// reached from the parent through the child's relay as IoT Hub reaches a
// device behind an Azure gateway: a direct method from the parent (with
// and without a payload) is answered by the SDK's handler; a desired
// patch at the parent reaches the SDK; its reported update reaches the
// parent's twin; a C2D message from the parent reaches it.
func TestSDKLeafBehindChild(t *testing.T) {
	parent := startHubAs(t, "parent", func(c *Config) { c.Hostname = "parent.test" }, false)
	childID := parent.addIdentity(t, IdentitySpec{Name: "child"})
	parent.addIdentity(t, IdentitySpec{Name: "sensor", Parent: "child"})
	child := startHubAs(t, "child", func(c *Config) {
		c.Hostname = "localhost"
		c.Upstream = UpstreamConfig{Mode: "azure", Host: parent.Hostname(), URL: fmt.Sprintf("ssl://127.0.0.1:%d", parent.Ports().MQTTS),
			DeviceKey: childID.PrimaryKey, CAFile: parent.CAPath(), KeepAlive: 10 * time.Second, Relay: true}
	}, false)
	sensor := child.addIdentity(t, IdentitySpec{Name: "sensor"})
	d := testenv.StartSDK(t, "sensor", testenv.SDKEnv{Kind: "device", CS: sensor.ConnectionString, CA: child.CAPath(), Methods: "reboot:200:0"})
	d.Must("open", nil)
	d.Must("getTwin", nil)
	waitSubscribed(t, child, "sensor", azure.DesiredPatchTopic(1))
	waitSubscribed(t, child, "sensor", azure.MethodRequestTopic("reboot", "1"))
	waitSubscribed(t, child, "sensor", "devices/sensor/messages/devicebound/x")
	waitFor(t, "the leaf's relay", func() bool { return relayState(child, "sensor") == "connected " })

	for payload, want := range map[string]string{`{"delay":1}`: `{"echoed":{"delay":1},"method":"reboot"}`, ``: `{"echoed":null,"method":"reboot"}`} {
		r, err := parent.InvokeMethod(t.Context(), "sensor", "reboot", json.RawMessage(payload), 10*time.Second)
		if err != nil || r.Status != 200 || string(r.Payload) != want {
			t.Errorf("method from the parent (payload %q): %d %s %v", payload, r.Status, r.Payload, err)
		}
	}
	if _, err := parent.PatchDesired(t.Context(), "sensor", []byte(`{"threshold": 4}`)); err != nil {
		t.Fatal(err)
	}
	d.Wait("desired", func(l testenv.SDKLine) bool { return strings.Contains(fmt.Sprint(l["patch"]), "threshold:4") })
	d.Must("report", map[string]any{"patch": map[string]any{"battery": 77}})
	waitFor(t, "the reported update at the parent", func() bool {
		tw, _ := parent.GetTwin(t.Context(), "sensor")
		return fmt.Sprint(tw.Reported["battery"]) == "77"
	})
	if err := parent.SendC2D(t.Context(), "sensor", []byte("from the parent"), map[string]string{"messageId": "p-1"}); err != nil {
		t.Fatal(err)
	}
	if l := d.Wait("c2d", nil); l.Str("body") != "from the parent" || l.Str("messageId") != "p-1" {
		t.Errorf("C2D from the parent: %v", l)
	}
}
