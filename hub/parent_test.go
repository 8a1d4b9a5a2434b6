package hub

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"ledge/internal/fault"
	"ledge/internal/testenv"
)

// startChildOf runs a child hub whose upstream is parent in azure mode
// with relays, as device childID with key.
func startChildOf(t *testing.T, parent *testHub, childID, key string) *testHub {
	return startHubAs(t, childID, func(c *Config) {
		c.Hostname = childID + ".test"
		c.Upstream = UpstreamConfig{Mode: "azure", Host: parent.Hostname(), URL: fmt.Sprintf("ssl://127.0.0.1:%d", parent.Ports().MQTTS),
			DeviceKey: key, CAFile: parent.CAPath(), KeepAlive: 10 * time.Second, Relay: true}
	}, false)
}

// answerMethods makes c answer every direct method with 200 and what it got.
func answerMethods(t *testing.T, c paho.Client) {
	mustOK(t, c.Subscribe("$iothub/methods/POST/#", 0, func(cl paho.Client, m paho.Message) {
		path, q, _ := strings.Cut(m.Topic(), "?")
		name := strings.TrimSuffix(strings.TrimPrefix(path, "$iothub/methods/POST/"), "/")
		body, _ := json.Marshal(map[string]any{"method": name, "got": json.RawMessage(m.Payload())})
		cl.Publish("$iothub/methods/res/200/?"+q, 0, false, body)
	}))
}

func relayState(h *testHub, identity string) string {
	for _, r := range h.Stats().Upstream.Relays {
		if r.Identity == identity {
			return r.State + " " + r.LastError
		}
	}
	return ""
}

// TestParentRelays: a child ledge's hub makes its parent a full parent.
// Direct methods, C2D and desired properties the parent sends to a leaf
// device behind the child and to the child's module reach them through
// the child (the leaf is registered at the parent with the child as its
// parent; the module is the child's); reported properties go up; the
// child's $edgeAgent twin at the parent is read and reported to. A leaf
// the parent does not know behind this child is refused there, and the
// child says so.
func TestParentRelays(t *testing.T) {
	parent := startHubAs(t, "parent", func(c *Config) { c.Hostname = "parent.test" }, false)
	childID := parent.addIdentity(t, IdentitySpec{Name: "child"})
	parent.addIdentity(t, IdentitySpec{Name: "sensor", Parent: "child"})
	if _, err := parent.AddIdentity(t.Context(), IdentitySpec{Name: "orphan", Parent: "nobody"}); !fault.Is(err, fault.Invalid) {
		t.Errorf("a parent that does not exist: %v", err)
	}

	child := startChildOf(t, parent, "child", childID.PrimaryKey)
	sensor := child.addIdentity(t, IdentitySpec{Name: "sensor"})
	stranger := child.addIdentity(t, IdentitySpec{Name: "stranger"})
	cam, err := child.EnsureModule(t.Context(), "cam")
	if err != nil {
		t.Fatal(err)
	}

	leafGot := newReceived()
	leaf, err := child.sasClient(t, "sensor", sensor.PrimaryKey, true, leafGot.handler)
	if err != nil {
		t.Fatal(err)
	}
	answerMethods(t, leaf)
	mustOK(t, leaf.Subscribe("devices/sensor/messages/devicebound/#", 1, nil))
	mustOK(t, leaf.Subscribe("$iothub/twin/PATCH/properties/desired/#", 0, nil))
	mustOK(t, leaf.Subscribe("$iothub/twin/res/#", 0, nil))
	camGot := newReceived()
	camc, err := child.sasClient(t, "child/cam", cam.PrimaryKey, true, camGot.handler)
	if err != nil {
		t.Fatal(err)
	}
	answerMethods(t, camc)
	mustOK(t, camc.Subscribe("$iothub/twin/PATCH/properties/desired/#", 0, nil))
	if _, err := child.sasClient(t, "stranger", stranger.PrimaryKey, true, nil); err != nil {
		t.Fatal(err)
	}

	waitFor(t, "relays connected", func() bool {
		return strings.HasPrefix(relayState(child, "sensor"), "connected") && strings.HasPrefix(relayState(child, "child/cam"), "connected")
	})
	waitFor(t, "the stranger refused", func() bool { return strings.HasPrefix(relayState(child, "stranger"), "refused") })

	// Direct methods from the parent.
	for _, target := range []string{"sensor", "child/cam"} {
		r, err := parent.InvokeMethod(t.Context(), target, "reboot", json.RawMessage(`{"delay":1}`), 10*time.Second)
		if err != nil || r.Status != 200 || string(r.Payload) != `{"got":{"delay":1},"method":"reboot"}` {
			t.Errorf("method on %s: %+v %v", target, r, err)
		}
	}
	if _, err := parent.InvokeMethod(t.Context(), "stranger", "x", nil, time.Second); !fault.Is(err, fault.NotFound) {
		t.Errorf("method on the refused stranger: %v", err)
	}

	// C2D, acknowledged to the parent once the leaf acknowledged it.
	if err := parent.SendC2D(t.Context(), "sensor", []byte("hello leaf"), map[string]string{"k": "v", "messageId": "m1"}); err != nil {
		t.Fatal(err)
	}
	m := leafGot.next(t, "C2D at the leaf")
	for m.Topic() == "" || !strings.HasPrefix(m.Topic(), "devices/sensor/messages/devicebound/") {
		m = leafGot.next(t, "C2D at the leaf")
	}
	if string(m.Payload()) != "hello leaf" || !strings.Contains(m.Topic(), "k=v") || !strings.Contains(m.Topic(), "$.mid=m1") {
		t.Errorf("C2D %s %q", m.Topic(), m.Payload())
	}

	// Desired properties, down; kept in the child.
	if _, err := parent.PatchDesired(t.Context(), "sensor", []byte(`{"threshold": 3}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the leaf's desired patch in the child", func() bool {
		tw, _ := child.GetTwin(t.Context(), "sensor")
		return fmt.Sprint(tw.Desired["threshold"]) == "3"
	})
	if _, err := parent.PatchDesired(t.Context(), "child/cam", []byte(`{"fps": 5}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the module's desired patch", func() bool {
		tw, _ := child.GetTwin(t.Context(), "child/cam")
		return fmt.Sprint(tw.Desired["fps"]) == "5"
	})
	// Reported, up.
	mustOK(t, leaf.Publish("$iothub/twin/PATCH/properties/reported/?$rid=1", 0, false, `{"battery": 80}`))
	waitFor(t, "the leaf's reported patch at the parent", func() bool {
		tw, _ := parent.GetTwin(t.Context(), "sensor")
		return fmt.Sprint(tw.Reported["battery"]) == "80"
	})

	// The agent's twins at the parent.
	agentHas := agentTwins(t, child)
	if _, err := parent.PatchDesired(t.Context(), "child/$edgeAgent", []byte(`{"schemaVersion": "1.1", "modules": {}}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the $edgeAgent twin at the child's agent", func() bool { return agentHas("$edgeAgent", `"schemaVersion":"1.1"`) })
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := child.ReportParentTwin(ctx, "$edgeAgent", json.RawMessage(`{"lastDesiredStatus": {"code": 200}}`)); err != nil {
		t.Fatal(err)
	}
	if tw, _ := parent.GetTwin(t.Context(), "child/$edgeAgent"); !strings.Contains(fmt.Sprint(tw.Reported), "code:200") {
		t.Errorf("the parent's $edgeAgent reported %v", tw.Reported)
	}
}

// TestDeviceKeyForItsModules: on a hub, a device's key authenticates its
// modules (an edge device holds its modules' identities) and no other
// device's; "on behalf of" (skn) works only for the devices whose parent
// the signer is.
func TestDeviceKeyForItsModules(t *testing.T) {
	h := startHubAs(t, "hub", func(c *Config) { c.Hostname = "hub.test" }, false)
	edge := h.addIdentity(t, IdentitySpec{Name: "edge"})
	other := h.addIdentity(t, IdentitySpec{Name: "other"})
	h.addIdentity(t, IdentitySpec{Name: "leaf", Parent: "edge"})
	if _, err := h.sasClient(t, "edge/$edgeAgent", edge.PrimaryKey, false, nil); err != nil {
		t.Errorf("edge's key for edge/$edgeAgent: %v", err)
	}
	if _, err := h.sasClient(t, "edge/$edgeAgent", other.PrimaryKey, false, nil); err == nil {
		t.Error("another device's key authenticates edge/$edgeAgent")
	}
	onBehalf := func(name, key, skn string) error {
		tok, _ := azureToken("hub.test/devices/"+name, key)
		_, err := h.connect(t, name, "hub.test/"+name+"/?api-version=2021-04-12", tok+"&skn="+skn, false, nil)
		return err
	}
	if err := onBehalf("leaf", edge.PrimaryKey, "edge"); err != nil {
		t.Errorf("edge on behalf of its leaf: %v", err)
	}
	if err := onBehalf("leaf", other.PrimaryKey, "other"); err == nil {
		t.Error("a device that is not the leaf's parent connected on its behalf")
	}
	if err := onBehalf("other", edge.PrimaryKey, "edge"); err == nil {
		t.Error("edge connected on behalf of a device it is not the parent of")
	}
	if tw, err := h.GetTwin(t.Context(), "edge/$edgeHub"); err != nil || tw.DesiredVersion != 0 {
		t.Errorf("edge/$edgeHub's twin: %+v %v", tw, err)
	}
	if _, err := h.GetTwin(t.Context(), "nobody/$edgeHub"); !fault.Is(err, fault.NotFound) {
		t.Errorf("a module of no device: %v", err)
	}
}

// TestParentTwinReadOvertaken: when a relay connects it reads its twin at
// the parent in full; a desired patch the parent sends after it answered
// that read can be taken first here (the answer is slow to come, or to be
// handled: paho hands each message to its own goroutine). The older read
// must not undo the patch: the agent gets the patched $ledge twin, and a
// leaf's desired properties here keep the patch. (The child of
// TestParentLedgeDeploys once took a deployment without its $ledge twin,
// and never the one with it, this way.)
func TestParentTwinReadOvertaken(t *testing.T) {
	parent := startHubAs(t, "parent", func(c *Config) { c.Hostname = "parent.test" }, false)
	childID := parent.addIdentity(t, IdentitySpec{Name: "child"})
	parent.addIdentity(t, IdentitySpec{Name: "sensor", Parent: "child"})
	child := startChildOf(t, parent, "child", childID.PrimaryKey)
	sensor := child.addIdentity(t, IdentitySpec{Name: "sensor"})

	// The first read of each twin is held once answered, until released.
	release := map[string]chan struct{}{"child/$ledge": make(chan struct{}), "sensor": make(chan struct{})}
	events := make(chan string, 1000)
	var mu sync.Mutex
	held := map[string]bool{}
	child.parent.mu.Lock()
	child.parent.hook = func(event, remote string, version int64) {
		select {
		case events <- fmt.Sprintf("%s %s %d", event, remote, version):
		default:
		}
		mu.Lock()
		ch := release[remote]
		hold := event == "read" && ch != nil && !held[remote]
		if hold {
			held[remote] = true
		}
		mu.Unlock()
		if hold {
			select {
			case <-ch:
			case <-t.Context().Done():
			}
		}
	}
	child.parent.mu.Unlock()
	waitEvent := func(want string) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		var saw []string
		for {
			select {
			case e := <-events:
				if e == want {
					return
				}
				saw = append(saw, e)
			case <-timeout:
				t.Fatalf("timed out waiting for %q; saw %q", want, saw)
			}
		}
	}

	agentHas := agentTwins(t, child)
	waitEvent("read child/$ledge 0")
	if _, err := parent.PatchDesired(t.Context(), "child/$ledge", []byte(`{"version": "7"}`)); err != nil {
		t.Fatal(err)
	}
	waitEvent("patch taken child/$ledge 1")
	close(release["child/$ledge"])
	waitEvent("read taken child/$ledge 0")
	waitFor(t, "the patched $ledge twin at the agent", func() bool { return agentHas("$ledge", `"version":"7"`) })

	// A leaf: its relay opens when it connects here.
	if _, err := child.sasClient(t, "sensor", sensor.PrimaryKey, true, nil); err != nil {
		t.Fatal(err)
	}
	waitEvent("read sensor 0")
	if _, err := parent.PatchDesired(t.Context(), "sensor", []byte(`{"threshold": 5}`)); err != nil {
		t.Fatal(err)
	}
	waitEvent("patch taken sensor 1")
	close(release["sensor"])
	waitEvent("read taken sensor 0")
	waitFor(t, "the leaf's desired patch here", func() bool {
		tw, _ := child.GetTwin(t.Context(), "sensor")
		return fmt.Sprint(tw.Desired["threshold"]) == "5"
	})
}

// lostTwinGets is a fault at a parent: the first n twin requests of each
// client it names whose topic starts with prefix (a GET, by default) go
// unanswered while the connection stays up: each is read as a GET with
// another request id, so the answer goes to no one (and a reported patch
// is not applied).
type lostTwinGets struct {
	mqtt.HookBase
	prefix string
	mu     sync.Mutex
	left   map[string]int // client id -> requests still to lose
	lost   chan string
}

func (d *lostTwinGets) ID() string           { return "test-lost-twin-requests-" + d.prefix }
func (d *lostTwinGets) Provides(b byte) bool { return b == mqtt.OnPacketRead }

func (d *lostTwinGets) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	prefix := cmp.Or(d.prefix, "$iothub/twin/GET/")
	if pk.FixedHeader.Type != packets.Publish || !strings.HasPrefix(pk.TopicName, prefix) {
		return pk, nil
	}
	d.mu.Lock()
	lose := d.left[cl.ID] > 0
	if lose {
		d.left[cl.ID]--
	}
	d.mu.Unlock()
	if lose {
		_, q, _ := strings.Cut(pk.TopicName, "?")
		pk.TopicName = "$iothub/twin/GET/?" + strings.Replace(q, "$rid=", "$rid=lost-", 1)
		pk.Payload = nil
		select {
		case d.lost <- cl.ID:
		default:
		}
	}
	return pk, nil
}

// TestParentTwinReadRetried: a relay whose first reads of its twin at the
// parent get no answer, while the connection stays up, reads it again
// with back-off; until it has, the relay's status says why. The agent
// gets its $ledge twin and a leaf its desired properties.
func TestParentTwinReadRetried(t *testing.T) {
	testenv.Integration(t, "a parent and a child hub, retries with back-off over seconds")
	parent := startHubAs(t, "parent", func(c *Config) { c.Hostname = "parent.test" }, false)
	childID := parent.addIdentity(t, IdentitySpec{Name: "child"})
	parent.addIdentity(t, IdentitySpec{Name: "sensor", Parent: "child"})
	if _, err := parent.PatchDesired(t.Context(), "child/$ledge", []byte(`{"version": "3"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := parent.PatchDesired(t.Context(), "sensor", []byte(`{"threshold": 9}`)); err != nil {
		t.Fatal(err)
	}
	fault := &lostTwinGets{left: map[string]int{"child/$ledge": 2, "sensor": 2}, lost: make(chan string, 10)}
	if err := parent.srv.AddHook(fault, nil); err != nil {
		t.Fatal(err)
	}
	child := startChildOf(t, parent, "child", childID.PrimaryKey)
	child.parent.mu.Lock()
	child.parent.twinTimeout = 300 * time.Millisecond
	child.parent.mu.Unlock()
	sensor := child.addIdentity(t, IdentitySpec{Name: "sensor"})

	agentHas := agentTwins(t, child)
	if _, err := child.sasClient(t, "sensor", sensor.PrimaryKey, true, nil); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"child/$ledge", "sensor"} {
		waitFor(t, "the relay of "+id+" saying its twin read got no answer", func() bool {
			s := relayState(child, id)
			return strings.HasPrefix(s, "connected ") && strings.Contains(s, "read the twin") && strings.Contains(s, "did not answer")
		})
	}
	waitFor(t, "the $ledge twin at the agent", func() bool { return agentHas("$ledge", `"version":"3"`) })
	waitFor(t, "the leaf's desired properties here", func() bool {
		tw, _ := child.GetTwin(t.Context(), "sensor")
		return fmt.Sprint(tw.Desired["threshold"]) == "9"
	})
	for _, id := range []string{"child/$ledge", "sensor"} {
		waitFor(t, "the relay of "+id+" without an error", func() bool { return relayState(child, id) == "connected " })
	}
	if len(fault.lost) != 4 {
		t.Errorf("%d twin GETs lost, want 4", len(fault.lost))
	}
}

// TestParentReportedRetried: a reported patch of a leaf behind a child
// that the parent loses (no answer, while the connection stays up) is not
// lost: the relay sends the leaf's reported properties again with
// back-off until the parent takes them, and says why meanwhile.
func TestParentReportedRetried(t *testing.T) {
	testenv.Integration(t, "a parent and a child hub, retries with back-off over seconds")
	parent := startHubAs(t, "parent", func(c *Config) { c.Hostname = "parent.test" }, false)
	childID := parent.addIdentity(t, IdentitySpec{Name: "child"})
	parent.addIdentity(t, IdentitySpec{Name: "sensor", Parent: "child"})
	child := startChildOf(t, parent, "child", childID.PrimaryKey)
	child.parent.mu.Lock()
	child.parent.twinTimeout = 300 * time.Millisecond
	child.parent.mu.Unlock()
	sensor := child.addIdentity(t, IdentitySpec{Name: "sensor"})
	leaf, err := child.sasClient(t, "sensor", sensor.PrimaryKey, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, leaf.Subscribe("$iothub/twin/res/#", 0, nil))
	waitFor(t, "the leaf's relay", func() bool { return relayState(child, "sensor") == "connected " })

	fault := &lostTwinGets{prefix: "$iothub/twin/PATCH/properties/reported/", left: map[string]int{"sensor": 2}, lost: make(chan string, 10)}
	if err := parent.srv.AddHook(fault, nil); err != nil {
		t.Fatal(err)
	}
	mustOK(t, leaf.Publish("$iothub/twin/PATCH/properties/reported/?$rid=1", 1, false, `{"battery": 80}`))
	waitFor(t, "the relay saying the parent did not take the reported properties", func() bool {
		s := relayState(child, "sensor")
		return strings.HasPrefix(s, "connected ") && strings.Contains(s, "report to the parent") && strings.Contains(s, "did not answer")
	})
	waitFor(t, "the leaf's reported patch at the parent", func() bool {
		tw, _ := parent.GetTwin(t.Context(), "sensor")
		return fmt.Sprint(tw.Reported["battery"]) == "80"
	})
	waitFor(t, "the relay without an error", func() bool { return relayState(child, "sensor") == "connected " })
	if len(fault.lost) != 2 {
		t.Errorf("%d reported patches lost, want 2", len(fault.lost))
	}
}

// agentTwins watches the agent's twins at the parent through h until the
// test ends; the function it returns reports whether the last set seen
// has want in twin.
func agentTwins(t *testing.T, h *testHub) func(twin, want string) bool {
	t.Helper()
	var mu sync.Mutex
	var last map[string]json.RawMessage
	stop, err := h.WatchParentTwins([]string{"$edgeAgent", "$edgeHub", "$ledge"}, func(d map[string]json.RawMessage) {
		mu.Lock()
		last = d
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return func(twin, want string) bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(string(last[twin]), want)
	}
}
