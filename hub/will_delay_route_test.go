package hub

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	pahov5 "github.com/eclipse/paho.golang/paho"

	"ledge/hub/azure"
)

// TestWillDelayRouted: an MQTT 5 device's Will on its telemetry topic
// with a Will Delay is routed when the delay has passed, not as soon as
// the connection drops, and not at all when the device is back within
// the delay [MQTT-3.1.3-9] (the route's copy went at once either way).
func TestWillDelayRouted(t *testing.T) {
	h := startHub(t, func(c *Config) {
		c.Routes = map[string]RouteConfig{"r": {Route: `FROM /messages/* INTO BrokeredEndpoint("/modules/sink/inputs/in")`}}
	}, false)
	dev := h.addIdentity(t, IdentitySpec{Name: "w5"})
	sinkCreds, _ := h.EnsureModule(t.Context(), "sink")
	got := newReceived()
	sink, err := h.sasClient(t, testDevice+"/sink", sinkCreds.PrimaryKey, false, got.handler)
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, sink.Subscribe("devices/"+testDevice+"/modules/sink/inputs/#", 1, nil))

	const delay = 3
	// connect opens a session with a Will delayed by 3 s, and returns its
	// connection, to be dropped without a DISCONNECT.
	connect := func(will string, cleanStart bool) net.Conn {
		t.Helper()
		tok, _ := azure.BuildToken(azure.Resource(h.Hostname(), "w5", ""), dev.PrimaryKey, time.Now().Add(time.Hour))
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", h.Ports().MQTT))
		if err != nil {
			t.Fatal(err)
		}
		c := pahov5.NewClient(pahov5.ClientConfig{Conn: conn, OnClientError: func(error) {}})
		expiry, wd := uint32(60), uint32(delay)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		if _, err := c.Connect(ctx, &pahov5.Connect{ClientID: "w5", CleanStart: cleanStart, KeepAlive: 30,
			Username: h.Hostname() + "/w5/?api-version=2021-04-12", UsernameFlag: true, Password: []byte(tok), PasswordFlag: true,
			Properties:     &pahov5.ConnectProperties{SessionExpiryInterval: &expiry},
			WillMessage:    &pahov5.WillMessage{Topic: "devices/w5/messages/events/", Payload: []byte(will), QoS: 1},
			WillProperties: &pahov5.WillProperties{WillDelayInterval: &wd},
		}); err != nil {
			t.Fatalf("connect: %v", err)
		}
		return conn
	}
	isWill := func(m interface{ Topic() string }) bool {
		return strings.Contains(m.Topic(), "iothub-messagetype=Will")
	}

	// held is whether the hub holds a Will of w5's for its delay: it saw
	// the connection drop.
	held := func() bool { _, ok := h.willsDue.Load("w5"); return ok }

	// Back within the delay: no Will, ever. The device drops again at
	// once, for good, with another Will: that one is routed when its delay
	// has passed, after the first would have been, so the first message
	// routed tells whether the first Will went too.
	conn := connect("back-in-time", true)
	conn.Close()
	waitFor(t, "the hub holding the first Will", held)
	conn = connect("gone", false)
	waitFor(t, "the hub dropping the first Will (the device came back within its delay)", func() bool { return !held() })

	// Away for good: routed once the delay has passed.
	conn.Close()
	dropped := time.Now()
	m := got.next(t, "the Will after its delay")
	if waited := time.Since(dropped); waited < time.Duration(delay-1)*time.Second {
		t.Errorf("the Will was routed %v after the connection dropped, before its %d s delay", waited, delay)
	}
	if string(m.Payload()) != "gone" || !isWill(m) {
		t.Fatalf("first message routed %q %q, want the Will \"gone\" (a Will routed although the device came back within its delay?)", m.Topic(), m.Payload())
	}
}
