package hub

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"ledge/hub/azure"
)

// TestNestedAzureUpstream: a child ledge's $upstream, in Azure IoT Hub
// device mode over TLS with a SAS from its device key, lands in a parent
// ledge's hub as the child's device telemetry; the agent's own upstream
// publish and subscribe (a retained deployment message) work through the
// same bridge.
func TestNestedAzureUpstream(t *testing.T) {
	parent := startHubAs(t, "parent", func(c *Config) {
		c.Hostname = "parent.test"
		c.Routes = map[string]RouteConfig{"fromChildren": {Route: `FROM /messages/* INTO BrokeredEndpoint("/modules/sink/inputs/in")`}}
		c.ACL = append(c.ACL, ACLRule{Kinds: []string{"device"}, Publish: []string{"ledge/{id}/#"}, Subscribe: []string{"ledge/{id}/#"}})
	}, false)
	childID := parent.addIdentity(t, IdentitySpec{Name: "child"})
	sinkCreds, _ := parent.EnsureModule(t.Context(), "sink")
	got := newReceived()
	sink, err := parent.sasClient(t, "parent/sink", sinkCreds.PrimaryKey, false, got.handler)
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, sink.Subscribe("devices/parent/modules/sink/inputs/#", 1, nil))
	operator := parent.addIdentity(t, IdentitySpec{Name: "operator", Kind: KindUser, Password: "op-pw"})
	_ = operator

	child := startHubAs(t, "child", func(c *Config) {
		c.Hostname = "child.test"
		c.Routes = map[string]RouteConfig{"up": {Route: `FROM /messages/modules/cam/* INTO $upstream`}}
		c.Upstream = UpstreamConfig{Mode: "azure", Host: "parent.test", URL: fmt.Sprintf("ssl://127.0.0.1:%d", parent.Ports().MQTTS),
			DeviceKey: childID.PrimaryKey, CAFile: parent.CAPath(), KeepAlive: 10 * time.Second}
	}, false)
	// The status says connected once paho ran its connect handler, a
	// moment after the connection is open: wait for that.
	waitFor(t, "child upstream connected", func() bool { return child.UpstreamConnected() && child.Stats().Upstream.State == "connected" })
	if st := child.Stats().Upstream; st.State != "connected" || st.Mode != "azure" {
		t.Errorf("upstream status %+v", st)
	}

	if err := child.Publish(t.Context(), "cam", "detections", []byte(`{"n":1}`), map[string]string{"label": "person"}); err != nil {
		t.Fatal(err)
	}
	m := got.next(t, "child telemetry in the parent")
	prefix := "devices/parent/modules/sink/inputs/in/"
	app, sys, err := azure.ParseBag(strings.TrimPrefix(m.Topic(), prefix))
	if err != nil || !strings.HasPrefix(m.Topic(), prefix) {
		t.Fatalf("topic %q: %v", m.Topic(), err)
	}
	if sys["connectionDeviceId"] != "child" || app["label"] != "person" || string(m.Payload()) != `{"n":1}` {
		t.Errorf("in parent: app=%v sys=%v payload=%q", app, sys, m.Payload())
	}

	// The agent's deployment topic: a retained message upstream.
	op, err := parent.connect(t, "operator-1", "operator", "op-pw", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, op.Publish("ledge/child/deployment", 1, true, `{"version":3}`))
	manifests := make(chan string, 1)
	unsub, err := child.SubscribeUpstream("ledge/child/deployment", 1, func(topic string, payload []byte) { manifests <- string(payload) })
	if err != nil {
		t.Fatal(err)
	}
	defer unsub()
	select {
	case p := <-manifests:
		if p != `{"version":3}` {
			t.Errorf("manifest %q", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("retained deployment message not received through the bridge")
	}
	reported := newReceived()
	rc, _ := parent.connect(t, "operator-2", "operator", "op-pw", false, reported.handler)
	mustOK(t, rc.Subscribe("ledge/child/reported", 1, nil))
	if err := child.PublishUpstream(t.Context(), "ledge/child/reported", []byte(`{"ok":true}`), 1, false); err != nil {
		t.Fatal(err)
	}
	if m := reported.next(t, "reported state"); string(m.Payload()) != `{"ok":true}` {
		t.Errorf("reported %q", m.Payload())
	}
}
