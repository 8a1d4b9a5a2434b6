package hub

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"ledge/hub/azure"
	"ledge/internal/fault"
)

// TestAzureDeviceFlows performs the IoT Hub device and module flows by
// hand with paho, as an SDK does: SAS token, telemetry with a property
// bag routed to a module input, twin GET and reported PATCH, a desired
// patch notification, a direct method and C2D.
func TestAzureDeviceFlows(t *testing.T) {
	h := startHub(t, func(c *Config) {
		c.Routes = map[string]RouteConfig{"toSink": {Route: `FROM /messages/* INTO BrokeredEndpoint("/modules/sink/inputs/in1")`}}
	}, false)
	dev := h.addIdentity(t, IdentitySpec{Name: "thermo"})
	if !strings.HasPrefix(dev.ConnectionString, "HostName=ledge.test;DeviceId=thermo;SharedAccessKey=") {
		t.Errorf("connection string %q", dev.ConnectionString)
	}
	creds, err := h.EnsureModule(t.Context(), "sink")
	if err != nil {
		t.Fatal(err)
	}

	sinkMsgs := newReceived()
	sink, err := h.sasClient(t, testDevice+"/sink", creds.PrimaryKey, true, sinkMsgs.handler)
	if err != nil {
		t.Fatalf("module over TLS with SAS: %v", err)
	}
	if code := subscribeCode(t, sink, "devices/"+testDevice+"/modules/sink/inputs/#", 1); code != 1 {
		t.Fatalf("module input subscription: SUBACK %d", code)
	}

	devMsgs := newReceived()
	// The secondary key works as well as the primary.
	d, err := h.sasClient(t, "thermo", dev.SecondaryKey, false, devMsgs.handler)
	if err != nil {
		t.Fatalf("device with SAS (secondary key): %v", err)
	}
	for _, f := range []string{"$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/#", "$iothub/methods/POST/#", "devices/thermo/messages/devicebound/#"} {
		if code := subscribeCode(t, d, f, 1); code > 1 {
			t.Fatalf("subscribe %s: SUBACK %d", f, code)
		}
	}

	t.Run("telemetry", func(t *testing.T) {
		mustOK(t, d.Publish("devices/thermo/messages/events/$.ct=application%2Fjson&$.ce=utf-8&$.mid=m-1&alert=high%20temp", 1, false, `{"t":42}`))
		m := sinkMsgs.next(t, "routed telemetry at the module input")
		if string(m.Payload()) != `{"t":42}` {
			t.Errorf("payload %q", m.Payload())
		}
		prefix := "devices/" + testDevice + "/modules/sink/inputs/in1/"
		if !strings.HasPrefix(m.Topic(), prefix) {
			t.Fatalf("topic %q, want prefix %q", m.Topic(), prefix)
		}
		app, sys, err := azure.ParseBag(m.Topic()[len(prefix):])
		if err != nil {
			t.Fatal(err)
		}
		if app["alert"] != "high temp" || sys["messageId"] != "m-1" || sys["contentType"] != "application/json" || sys["connectionDeviceId"] != "thermo" {
			t.Errorf("properties app=%v sys=%v", app, sys)
		}
	})

	t.Run("twin", func(t *testing.T) {
		mustOK(t, d.Publish("$iothub/twin/PATCH/properties/reported/?$rid=r1", 1, false, `{"fw":"1.2","nested":{"a":1}}`))
		m := devMsgs.next(t, "reported patch response")
		if m.Topic() != "$iothub/twin/res/204/?$rid=r1&$version=1" {
			t.Errorf("patch response topic %q", m.Topic())
		}
		mustOK(t, d.Publish("$iothub/twin/PATCH/properties/reported/?$rid=r2", 1, false, `not json`))
		if m := devMsgs.next(t, "bad patch response"); !strings.HasPrefix(m.Topic(), "$iothub/twin/res/400/?$rid=r2") {
			t.Errorf("bad patch: %q", m.Topic())
		}
		var big strings.Builder // 9 strings of 4,000 bytes: each within the 4 KB limit, over 32 KB together
		for i := range 9 {
			fmt.Fprintf(&big, `%s"b%d":"%s"`, map[bool]string{true: "{", false: ","}[i == 0], i, strings.Repeat("x", 4000))
		}
		big.WriteString("}")
		mustOK(t, d.Publish("$iothub/twin/PATCH/properties/reported/?$rid=r3", 1, false, big.String()))
		if m := devMsgs.next(t, "oversized patch response"); !strings.HasPrefix(m.Topic(), "$iothub/twin/res/413/?$rid=r3") {
			t.Errorf("oversized patch: %q", m.Topic())
		}

		if _, err := h.PatchDesired(t.Context(), "thermo", []byte(`{"interval":5}`)); err != nil {
			t.Fatal(err)
		}
		m = devMsgs.next(t, "desired notification")
		if m.Topic() != "$iothub/twin/PATCH/properties/desired/?$version=1" {
			t.Errorf("desired topic %q", m.Topic())
		}
		var patch map[string]any
		json.Unmarshal(m.Payload(), &patch)
		if patch["interval"] != float64(5) || patch["$version"] != float64(1) {
			t.Errorf("desired patch %s", m.Payload())
		}

		mustOK(t, d.Publish("$iothub/twin/GET/?$rid=g1", 1, false, ""))
		m = devMsgs.next(t, "twin GET response")
		if m.Topic() != "$iothub/twin/res/200/?$rid=g1" {
			t.Fatalf("GET topic %q", m.Topic())
		}
		var doc struct{ Desired, Reported map[string]any }
		if err := json.Unmarshal(m.Payload(), &doc); err != nil {
			t.Fatal(err)
		}
		if doc.Desired["$version"] != float64(1) || doc.Desired["interval"] != float64(5) ||
			doc.Reported["$version"] != float64(1) || doc.Reported["fw"] != "1.2" {
			t.Errorf("twin %s", m.Payload())
		}
		// null deletes a key.
		mustOK(t, d.Publish("$iothub/twin/PATCH/properties/reported/?$rid=r4", 1, false, `{"fw":null}`))
		devMsgs.next(t, "patch response")
		tw, _ := h.GetTwin(t.Context(), "thermo")
		if _, ok := tw.Reported["fw"]; ok || tw.ReportedVersion != 2 {
			t.Errorf("after null patch: %+v", tw)
		}
	})

	t.Run("method", func(t *testing.T) {
		go func() {
			m := devMsgs.next(t, "method call")
			rid := m.Topic()[strings.Index(m.Topic(), "$rid=")+5:]
			if !strings.HasPrefix(m.Topic(), "$iothub/methods/POST/reboot/?$rid=") || string(m.Payload()) != `{"delay":1}` {
				t.Errorf("method request %q %q", m.Topic(), m.Payload())
			}
			d.Publish("$iothub/methods/res/200/?$rid="+rid, 1, false, `{"ok":true}`)
		}()
		r, err := h.InvokeMethod(t.Context(), "thermo", "reboot", json.RawMessage(`{"delay":1}`), 5*time.Second)
		if err != nil || r.Status != 200 || string(r.Payload) != `{"ok":true}` {
			t.Fatalf("method: %+v %v", r, err)
		}
		// Nobody answers: 504.
		_, err = h.InvokeMethod(t.Context(), "thermo", "slow", nil, 300*time.Millisecond)
		if !fault.Is(err, fault.Timeout) {
			t.Errorf("unanswered method: %v, want a timeout", err)
		}
		devMsgs.next(t, "the unanswered call")
		// Not connected: 404.
		h.addIdentity(t, IdentitySpec{Name: "offline"})
		if _, err = h.InvokeMethod(t.Context(), "offline", "x", nil, time.Second); !fault.Is(err, fault.NotFound) {
			t.Errorf("method to a disconnected device: %v, want not found", err)
		}
	})

	t.Run("c2d", func(t *testing.T) {
		if err := h.SendC2D(t.Context(), "thermo", []byte("hello"), map[string]string{"messageId": "c1", "color": "red"}); err != nil {
			t.Fatal(err)
		}
		m := devMsgs.next(t, "c2d")
		if m.Topic() != "devices/thermo/messages/devicebound/$.mid=c1&color=red" || string(m.Payload()) != "hello" {
			t.Errorf("c2d %q %q", m.Topic(), m.Payload())
		}
		if err := h.SendC2D(t.Context(), "offline", []byte("x"), nil); !fault.Is(err, fault.NotFound) {
			t.Errorf("c2d to a disconnected device: %v", err)
		}
		// Another kind of identity: the error says what it is.
		h.addIdentity(t, IdentitySpec{Name: "plc", Kind: KindUser, Password: "pw-plc-123456"})
		if err := h.SendC2D(t.Context(), "plc", []byte("x"), nil); !fault.Is(err, fault.Invalid) || !strings.Contains(err.Error(), `"plc" is a user, not a device`) {
			t.Errorf("c2d to a user: %v", err)
		}
	})

	st := h.Stats()
	if st.ClientsConnected != 2 || st.Routed == 0 || st.Delivered == 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestInProcessPublish: a pipeline publishes on its output, the route
// takes it to a module input.
func TestInProcessPublish(t *testing.T) {
	h := startHub(t, func(c *Config) {
		c.Routes = map[string]RouteConfig{"cam": {Route: `FROM /messages/modules/cam/outputs/detections INTO BrokeredEndpoint("/modules/blink/inputs/in")`}}
	}, false)
	creds, err := h.EnsureModule(t.Context(), "blink")
	if err != nil {
		t.Fatal(err)
	}
	got := newReceived()
	// Plain MQTT credentials of a module (what the agent injects).
	c, err := h.connect(t, creds.Username, creds.Username, creds.Password, false, got.handler)
	if err != nil {
		t.Fatalf("module with plain MQTT credentials: %v", err)
	}
	mustOK(t, c.Subscribe("devices/"+testDevice+"/modules/blink/inputs/in/#", 1, nil))
	if err := h.Publish(t.Context(), "cam", "detections", []byte(`{"label":"person"}`), map[string]string{"label": "person", "contentType": "application/json"}); err != nil {
		t.Fatal(err)
	}
	if err := h.Publish(t.Context(), "cam", "other", []byte(`x`), nil); err != nil {
		t.Fatal(err)
	}
	m := got.next(t, "pipeline message at the module input")
	want := fmt.Sprintf("devices/%s/modules/blink/inputs/in/$.ct=application%%2Fjson&$.cdid=%s&$.cmid=cam&label=person", testDevice, testDevice)
	if m.Topic() != want || string(m.Payload()) != `{"label":"person"}` {
		t.Errorf("got %q %q, want topic %q", m.Topic(), m.Payload(), want)
	}
	// A message published after it on the routed output is the next one
	// the module gets: the unrouted one, published before, would have
	// come first.
	if err := h.Publish(t.Context(), "cam", "detections", []byte(`{"label":"person","n":2}`), map[string]string{"label": "person", "contentType": "application/json"}); err != nil {
		t.Fatal(err)
	}
	if m := got.next(t, "the second routed message"); string(m.Payload()) != `{"label":"person","n":2}` {
		t.Errorf("the module's next message after an unrouted output is %s %q, want the second routed one", m.Topic(), m.Payload())
	}
	if d := h.Stats().Drops[dropNoRoute]; d != 1 {
		t.Errorf("no_route drops %d, want 1", d)
	}
	_ = paho.ErrNotConnected
}
