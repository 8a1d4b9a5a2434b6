package hub

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"ledge/internal/testenv"
)

// TestLeafModuleIsNotALocalModule: a leaf device's key authenticates
// modules of that device (an edge device holds its modules' identities),
// so a sensor on the LAN may connect as "sensor/detector". Its messages
// must not pass for those of this appliance's module "detector": a route
// written for the local module's output (FROM /messages/modules/detector/
// outputs/alarm INTO another module's input) must not carry them. Before
// the fix the leaf's message reached the local sink's input as if the
// local detector had raised the alarm.
func TestLeafModuleIsNotALocalModule(t *testing.T) {
	h := startHubAs(t, "gw", func(c *Config) {
		c.Hostname = "gw.test"
		c.Routes = map[string]RouteConfig{
			"alarm":  {Route: `FROM /messages/modules/detector/outputs/alarm INTO BrokeredEndpoint("/modules/sink/inputs/cmd")`},
			"leaves": {Route: `FROM /messages/* WHERE $connectionDeviceId = 'sensor' INTO BrokeredEndpoint("/modules/sink/inputs/leaves")`},
		}
	}, false)
	sensor := h.addIdentity(t, IdentitySpec{Name: "sensor"})
	sinkCreds, err := h.EnsureModule(t.Context(), "sink")
	if err != nil {
		t.Fatal(err)
	}
	detCreds, err := h.EnsureModule(t.Context(), "detector")
	if err != nil {
		t.Fatal(err)
	}
	got := newReceived()
	sink, err := h.sasClient(t, "gw/sink", sinkCreds.PrimaryKey, false, got.handler)
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, sink.Subscribe("devices/gw/modules/sink/inputs/#", 1, nil))

	// The attack: the sensor's own key, as module "detector" of itself.
	leaf, err := h.sasClient(t, "sensor/detector", sensor.PrimaryKey, false, nil)
	if err != nil {
		t.Fatalf("the sensor's key for sensor/detector (documented: a device's key authenticates its modules): %v", err)
	}
	mustOK(t, leaf.Publish("devices/sensor/modules/detector/messages/events/$.on=alarm", 1, false, `{"open":"valve"}`))
	// It is the sensor's telemetry (the catch-all route for it fires),
	// and nothing more.
	m := got.next(t, "the sensor's message on the route for its device")
	if !strings.HasPrefix(m.Topic(), "devices/gw/modules/sink/inputs/leaves/") {
		t.Fatalf("the leaf's module message went to %s (want only the route for its device's telemetry)", m.Topic())
	}

	// The local detector's own alarm still goes through its route, and is
	// the next message the sink gets: the leaf's, acknowledged before it,
	// would have come first had it taken that route.
	det, err := h.sasClient(t, "gw/detector", detCreds.PrimaryKey, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, det.Publish("devices/gw/modules/detector/messages/events/$.on=alarm", 1, false, `{"open":"valve","by":"detector"}`))
	if m := got.next(t, "the local detector's alarm"); !strings.HasPrefix(m.Topic(), "devices/gw/modules/sink/inputs/cmd/") || string(m.Payload()) != `{"open":"valve","by":"detector"}` {
		t.Errorf("the sink's next message after the leaf's is %s %q, want the local detector's alarm on its route", m.Topic(), m.Payload())
	}
}

// TestOwnDeviceKeyIsNotAMasterKey: a device identity named like the
// appliance itself (`ledge identity add gw` on device gw, say for a
// script that sends the gateway's own readings) is a device like any
// other: its key must not authenticate this appliance's modules (whose
// keys the agent makes, one per module), nor sign for them on behalf
// (skn). Before the fix its key connected as every local module, took
// over module names that had no connection yet and called methods as
// any of them.
func TestOwnDeviceKeyIsNotAMasterKey(t *testing.T) {
	h := startHubAs(t, "gw", func(c *Config) { c.Hostname = "gw.test" }, false)
	own := h.addIdentity(t, IdentitySpec{Name: "gw"})
	if _, err := h.EnsureModule(t.Context(), "detector"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.sasClient(t, "gw/detector", own.PrimaryKey, false, nil); err == nil {
		t.Error("the key of device gw authenticated the appliance's module gw/detector")
	}
	if _, err := h.sasClient(t, "gw/$edgeAgent", own.PrimaryKey, false, nil); err == nil {
		t.Error("the key of device gw authenticated gw/$edgeAgent (a module without an identity)")
	}
	tok, _ := azureToken("gw.test/devices/gw/modules/detector", own.PrimaryKey)
	if _, err := h.connect(t, "gw/detector", "gw.test/gw/detector/?api-version=2021-04-12", tok+"&skn=gw", false, nil); err == nil {
		t.Error("the key of device gw signed on behalf of gw/detector (skn)")
	}
	// Its own connection as a device still works.
	if _, err := h.sasClient(t, "gw", own.PrimaryKey, false, nil); err != nil {
		t.Errorf("device gw with its own key: %v", err)
	}
}

// TestLeafModuleTwinsBounded: a device's key authenticates modules of its
// own that have no identity here, each with a twin. A sensor on the LAN
// made a new module name per connection and wrote 30 KB of reported
// properties to each: every one a row of ledge.db, never removed, without
// bound (the appliance's disk filled at the rate it connected). Twins of
// modules without an identity are bounded per device
// (maxImplicitModuleTwins); the ones it has keep working, and a module
// with an identity of its own is not counted.
func TestLeafModuleTwinsBounded(t *testing.T) {
	h := startHubAs(t, "gw", func(c *Config) { c.Hostname = "gw.test" }, false)
	sensor := h.addIdentity(t, IdentitySpec{Name: "sensor"})
	h.addIdentity(t, IdentitySpec{Name: "sensor/registered", Kind: KindModule})
	big := `{"blob":"` + strings.Repeat("x", 4000) + `"}`
	report := func(module string) string {
		t.Helper()
		got := newReceived()
		c, err := h.sasClient(t, "sensor/"+module, sensor.PrimaryKey, false, got.handler)
		if err != nil {
			t.Fatalf("sensor/%s: %v", module, err)
		}
		defer c.Disconnect(0)
		mustOK(t, c.Subscribe("$iothub/twin/res/#", 0, nil))
		mustOK(t, c.Publish("$iothub/twin/PATCH/properties/reported/?$rid=1", 0, false, big))
		return got.next(t, "the answer to sensor/"+module+"'s reported patch").Topic()
	}
	for i := range maxImplicitModuleTwins {
		if tp := report(fmt.Sprintf("m%03d", i)); !strings.HasPrefix(tp, "$iothub/twin/res/204/") {
			t.Fatalf("module twin %d of %d: %s", i+1, maxImplicitModuleTwins, tp)
		}
	}
	if tp := report("one-too-many"); !strings.HasPrefix(tp, "$iothub/twin/res/403/") {
		t.Errorf("module twin %d of the sensor: %s (want 403)", maxImplicitModuleTwins+1, tp)
	}
	if _, err := h.GetTwin(t.Context(), "sensor/one-too-many"); err != nil {
		t.Fatal(err)
	}
	var rows int
	if err := h.twins.db.QueryRow(`SELECT count(*) FROM hub_twins WHERE name LIKE 'sensor/%'`).Scan(&rows); err != nil || rows != maxImplicitModuleTwins {
		t.Errorf("%d module twins of the sensor stored (%v), want %d", rows, err, maxImplicitModuleTwins)
	}
	// Those it has are written as before; a registered module is not
	// counted.
	if tp := report("m000"); !strings.HasPrefix(tp, "$iothub/twin/res/204/") {
		t.Errorf("an existing module twin of the sensor: %s", tp)
	}
	if tp := report("registered"); !strings.HasPrefix(tp, "$iothub/twin/res/204/") {
		t.Errorf("the sensor's registered module: %s", tp)
	}
}

// TestRemovedDeviceLosesItsModulesAndChildren: removing a device (what an
// operator does with one that was stolen or whose key leaked) ends every
// connection its key opened: as itself, as a module of its own (its key
// authenticates them) and on behalf of the devices behind it (skn). Before
// the fix only the connection named like the device was closed; the
// others stayed, with a token that may be valid for years.
func TestRemovedDeviceLosesItsModulesAndChildren(t *testing.T) {
	h := startHubAs(t, "gw", func(c *Config) { c.Hostname = "gw.test" }, false)
	edge := h.addIdentity(t, IdentitySpec{Name: "edge"})
	h.addIdentity(t, IdentitySpec{Name: "leaf", Parent: "edge"})
	other := h.addIdentity(t, IdentitySpec{Name: "other"})
	self, err := h.sasClient(t, "edge", edge.PrimaryKey, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	mod, err := h.sasClient(t, "edge/$edgeAgent", edge.PrimaryKey, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := azureToken("gw.test/devices/leaf", edge.PrimaryKey)
	leaf, err := h.connect(t, "leaf", "gw.test/leaf/?api-version=2021-04-12", tok+"&skn=edge", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	bystander, err := h.sasClient(t, "other", other.PrimaryKey, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.RemoveIdentity(t.Context(), "edge"); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]interface{ IsConnectionOpen() bool }{"edge": self, "edge/$edgeAgent": mod, "leaf (on behalf of edge)": leaf} {
		waitFor(t, name+" disconnected after edge was removed", func() bool { return !c.IsConnectionOpen() })
	}
	if _, err := h.sasClient(t, "edge/$edgeAgent", edge.PrimaryKey, false, nil); err == nil {
		t.Error("the removed device's key still authenticates its module")
	}
	if !bystander.IsConnectionOpen() {
		t.Error("another device was disconnected")
	}
}

// TestLeafModulesShareTheDeviceQuota: hub.maxConnectionsPerIdentity keeps
// one identity's credentials from filling hub.maxClients and locking the
// other devices out. A device's key authenticates any number of modules
// of its own without an identity here, each of which was counted as an
// identity of its own: one leaf device's key held every connection the
// hub takes. They count against their device now.
func TestLeafModulesShareTheDeviceQuota(t *testing.T) {
	h := startHubAs(t, "gw", func(c *Config) {
		c.Hostname = "gw.test"
		c.MaxConnectionsPerIdentity = 3
	}, false)
	sensor := h.addIdentity(t, IdentitySpec{Name: "sensor"})
	reg := h.addIdentity(t, IdentitySpec{Name: "sensor/registered", Kind: KindModule})
	other := h.addIdentity(t, IdentitySpec{Name: "other"})
	for _, name := range []string{"sensor", "sensor/a", "sensor/b"} {
		if _, err := h.sasClient(t, name, sensor.PrimaryKey, false, nil); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if _, err := h.sasClient(t, "sensor/c", sensor.PrimaryKey, false, nil); err == nil {
		t.Error("a fourth connection of the sensor's key (as sensor/c) was taken: its modules are not counted against it")
	} else if !strings.Contains(err.Error(), "quota") && !strings.Contains(err.Error(), "unavailable") {
		t.Logf("refused: %v", err)
	}
	// A module with an identity (and key) of its own has its own quota;
	// other devices are not touched.
	if _, err := h.sasClient(t, "sensor/registered", reg.PrimaryKey, false, nil); err != nil {
		t.Errorf("the sensor's registered module: %v", err)
	}
	if _, err := h.sasClient(t, "other", other.PrimaryKey, false, nil); err != nil {
		t.Errorf("another device: %v", err)
	}
}

// TestPersistentSessionsBounded: a persistent session (clean session 0)
// is kept while its client is away, for up to a day. A client may choose
// its id (a user) or its module name (a device's key authenticates
// modules of its own), so one credential kept any number of them: 5,000
// in 3 s added 98 MB to ledge's memory, at that rate the memory of a
// small appliance in a minute. An identity holds at most
// hub.maxConnectionsPerIdentity sessions, connected or kept; its own
// reconnections always fit.
func TestPersistentSessionsBounded(t *testing.T) {
	h := startHubAs(t, "gw", func(c *Config) {
		c.Hostname = "gw.test"
		c.MaxConnectionsPerIdentity = 3
		c.ACL = append(c.ACL, ACLRule{Kinds: []string{"user"}, Subscribe: []string{"plain/#"}})
	}, false)
	sensor := h.addIdentity(t, IdentitySpec{Name: "sensor"})
	h.addIdentity(t, IdentitySpec{Name: "op", Kind: KindUser, Password: "op-pw"})
	persistent := func(clientID, user, pass string) error {
		o := paho.NewClientOptions().AddBroker(fmt.Sprintf("tcp://127.0.0.1:%d", h.Ports().MQTT)).
			SetClientID(clientID).SetUsername(user).SetPassword(pass).SetCleanSession(false).
			SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
		c := paho.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			return fmt.Errorf("connect %s: %v", clientID, tok.Error())
		}
		c.Disconnect(0)
		return nil
	}
	module := func(m string) error {
		tok, _ := azureToken("gw.test/devices/sensor/modules/"+m, sensor.PrimaryKey)
		return persistent("sensor/"+m, "gw.test/sensor/"+m+"/?api-version=2021-04-12", tok)
	}
	for _, m := range []string{"a", "b", "c"} {
		if err := module(m); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the sensor's three sessions kept", func() bool { return h.heldCount("sensor") == 3 })
	if err := module("d"); err == nil {
		t.Error("a fourth persistent session of the sensor's key was kept")
	}
	if err := module("a"); err != nil {
		t.Errorf("the sensor/a reconnecting to its own session: %v", err)
	}
	for _, id := range []string{"u1", "u2", "u3"} {
		if err := persistent(id, "op", "op-pw"); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the user's three sessions kept", func() bool { return h.heldCount("op") == 3 })
	if err := persistent("u4", "op", "op-pw"); err == nil {
		t.Error("a fourth persistent session of user op was kept")
	}
	if err := persistent("u2", "op", "op-pw"); err != nil {
		t.Errorf("user op back on its session u2: %v", err)
	}
}

// TestServerCertificateCoversTheLANName: on a LAN the appliance is
// reached by its host name with mDNS's ".local" (raspberrypi.local), which
// the server certificate lacked: a browser or an SDK that trusts the
// hub's CA still refused it there, and people learn to click through
// certificate warnings. Checked with openssl, as a client sees it.
func TestServerCertificateCoversTheLANName(t *testing.T) {
	host, err := os.Hostname()
	if err != nil || host == "" || strings.Contains(host, ".") {
		t.Skipf("host name %q: no mDNS name to check", host)
	}
	h := startHub(t, nil, false)
	openssl := testenv.Command(t, "openssl", "openssl")
	out, err := exec.Command(openssl, "s_client", "-connect", fmt.Sprintf("127.0.0.1:%d", h.Ports().MQTTS),
		"-CAfile", h.CAPath(), "-verify_hostname", host+".local", "-verify_return_error").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Verification: OK") {
		t.Errorf("openssl s_client -verify_hostname %s.local: %v\n%s", host, err, out)
	}
}

// TestRemovedIdentityTwinsGo: removing an identity removes its twin, and
// a device's, the twins of its modules without an identity here, as IoT
// Hub deletes a device's twin with it. They stayed: a device removed
// because its key leaked and added again (a new key) got back what the
// thief had reported, and the module twins the thief had filled up to the
// bound (maxImplicitModuleTwins) left none for the device's real modules.
func TestRemovedIdentityTwinsGo(t *testing.T) {
	h := startHubAs(t, "gw", func(c *Config) { c.Hostname = "gw.test" }, false)
	report := func(name, key, patch string) string {
		t.Helper()
		got := newReceived()
		c, err := h.sasClient(t, name, key, false, got.handler)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		defer c.Disconnect(0)
		mustOK(t, c.Subscribe("$iothub/twin/res/#", 0, nil))
		mustOK(t, c.Publish("$iothub/twin/PATCH/properties/reported/?$rid=1", 0, false, patch))
		return got.next(t, "the answer to "+name+"'s reported patch").Topic()
	}
	stolen := h.addIdentity(t, IdentitySpec{Name: "child"})
	report("child", stolen.PrimaryKey, `{"firmware":"evil"}`)
	for i := range maxImplicitModuleTwins {
		report(fmt.Sprintf("child/junk%03d", i), stolen.PrimaryKey, `{"x":1}`)
	}
	if err := h.RemoveIdentity(t.Context(), "child"); err != nil {
		t.Fatal(err)
	}
	fresh := h.addIdentity(t, IdentitySpec{Name: "child"})
	if tw, err := h.GetTwin(t.Context(), "child"); err != nil || len(tw.Reported) != 0 || tw.ReportedVersion != 0 {
		t.Errorf("the device added again has the removed one's twin: %+v %v", tw, err)
	}
	if tp := report("child/$edgeAgent", fresh.PrimaryKey, `{"ok":true}`); !strings.HasPrefix(tp, "$iothub/twin/res/204/") {
		t.Errorf("the device added again could not write its $edgeAgent twin: %s", tp)
	}
}

// TestMethodCallOutlivesAConnectionFlood: the hub's WebSocket port serves
// modules' direct method calls too (POST /twins/...), which may wait up
// to 300 s for the answer. Their connections stayed among the pending
// (unauthenticated) ones after the caller's token was checked, and past
// hub.maxPendingConnections the oldest pending is closed: anyone on the
// LAN who opened connections to the port cut the modules' calls in
// flight. An authenticated call leaves the pending ones, as an MQTT
// client does after its CONNECT.
func TestMethodCallOutlivesAConnectionFlood(t *testing.T) {
	port := freePort(t)
	h := startHubAs(t, "gw", func(c *Config) {
		c.Hostname = "gw.test"
		c.Listen.WebSocket = fmt.Sprintf("127.0.0.1:%d", port)
		c.MaxPendingConnections = 4
	}, false)
	slow := h.addIdentity(t, IdentitySpec{Name: "gw/slow", Kind: KindModule})
	caller := h.addIdentity(t, IdentitySpec{Name: "gw/caller", Kind: KindModule})
	var target paho.Client
	target, err := h.sasClient(t, "gw/slow", slow.PrimaryKey, false, func(_ paho.Client, m paho.Message) {
		rid := m.Topic()[strings.LastIndex(m.Topic(), "$rid=")+5:]
		go func() {
			time.Sleep(1500 * time.Millisecond)
			target.Publish("$iothub/methods/res/200/?$rid="+rid, 0, false, `{"done":true}`)
		}()
	})
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, target.Subscribe("$iothub/methods/POST/#", 0, nil))

	tok, _ := azureToken("gw.test/devices/gw/modules/caller", caller.PrimaryKey)
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(h.CAPath())
	pool.AppendCertsFromPEM(pem)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "gw.test"}}}
	type result struct {
		status int
		body   string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest("POST", fmt.Sprintf("https://127.0.0.1:%d/twins/gw/modules/slow/methods", port),
			strings.NewReader(`{"methodName":"work","payload":{},"responseTimeoutInSeconds":10}`))
		req.Header.Set("x-ms-edge-moduleId", "gw/caller")
		req.Header.Set("Authorization", tok)
		resp, err := c.Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		done <- result{status: resp.StatusCode, body: string(b)}
	}()
	// The call is waiting for its answer; ten silent connections come.
	waitFor(t, "the method call at the target", func() bool { return h.Stats().Methods > 0 })
	for range 10 {
		nc, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
	}
	select {
	case r := <-done:
		if r.err != nil || r.status != http.StatusOK || !strings.Contains(r.body, `"done":true`) {
			t.Errorf("the method call during a flood of connections: %d %s %v", r.status, r.body, r.err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the method call did not end")
	}
}
