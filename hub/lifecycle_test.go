package hub

import (
	"context"
	"database/sql"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"ledge/internal/testenv"
)

// settledGoroutines is the goroutine count once it stops changing (at
// most 2 s of waiting).
func settledGoroutines() int {
	n := runtime.NumGoroutine()
	for range 100 {
		time.Sleep(20 * time.Millisecond)
		m := runtime.NumGoroutine()
		if m == n {
			return n
		}
		n = m
	}
	return n
}

// pumpNames lists the endpoints the hub runs a pump for.
func (h *Hub) pumpNames() []string {
	h.pumpsMu.Lock()
	defer h.pumpsMu.Unlock()
	var out []string
	for ep := range h.pumps {
		out = append(out, ep)
	}
	slices.Sort(out)
	return out
}

// TestHubLeavesNothing builds, runs and stops a hub again and again, with
// an upstream, a module input, routes changed under load and a publisher
// still sending QoS 1 messages while the hub stops: no goroutine outlives
// it, and the pump of an endpoint no route names any more is gone once
// its queue drained.
func TestHubLeavesNothing(t *testing.T) {
	mq := newMosquitto(t, "")
	mq.start()
	const rounds = 4
	dbs := make([]*sql.DB, rounds) // opened first: a database has a goroutine of its own
	for i := range dbs {
		dbs[i] = testenv.DB(t)
	}
	base := settledGoroutines()
	for round := range rounds {
		cfg := DefaultConfig()
		cfg.Hostname = "ledge.test"
		cfg.Listen = ListenConfig{MQTT: "127.0.0.1:0", MQTTS: "127.0.0.1:0"}
		cfg.Routes = map[string]RouteConfig{
			"up": {Route: `FROM /messages/* INTO $upstream`},
			"in": {Route: `FROM /messages/* INTO BrokeredEndpoint("/modules/m/inputs/in")`},
		}
		cfg.Upstream = UpstreamConfig{Mode: "mqtt", URL: mq.url(), TopicTemplate: "x/{deviceId}", KeepAlive: 5 * time.Second}
		h, err := New(t.Context(), Options{Config: cfg, DB: dbs[round], DataDir: t.TempDir(), DeviceID: testDevice, Dev: true, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- h.Run(ctx) }()
		waitFor(t, "upstream", h.UpstreamConnected)
		th := &testHub{Hub: h}

		got := newReceived()
		mod, err := th.connect(t, testDevice+"/m", "", "", false, got.handler)
		if err != nil {
			t.Fatal(err)
		}
		mustOK(t, mod.Subscribe("devices/"+testDevice+"/modules/m/inputs/#", 1, nil))
		pub, err := th.connect(t, "d", "", "", false, nil)
		if err != nil {
			t.Fatal(err)
		}
		mustOK(t, pub.Publish("devices/d/messages/events/", 1, false, "first"))
		if m := got.next(t, "the routed message"); string(m.Payload()) != "first" {
			t.Fatalf("round %d: module got %q", round, m.Payload())
		}
		in := "/modules/m/inputs/in"
		if names := h.pumpNames(); !slices.Contains(names, in) {
			t.Fatalf("round %d: pumps %v, want one for %s", round, names, in)
		}
		// The module input's route goes: its pump goes once its queue is
		// empty, and so does the endpoint in the queue's statistics.
		if err := h.SetRoutes(map[string]RouteSpec{"up": {Route: `FROM /messages/* INTO $upstream`}}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the unrouted pump pruned", func() bool { return !slices.Contains(h.pumpNames(), in) })
		for _, q := range h.Stats().Queues {
			if q.Endpoint == in {
				t.Errorf("round %d: queue statistics still list %s: %+v", round, in, q)
			}
		}
		// Routed again, it gets a pump again.
		if err := h.SetRoutes(map[string]RouteSpec{"in": {Route: `FROM /messages/* INTO BrokeredEndpoint("/modules/m/inputs/in")`}}); err != nil {
			t.Fatal(err)
		}
		mustOK(t, pub.Publish("devices/d/messages/events/", 1, false, "again"))
		if m := got.next(t, "the message routed again"); string(m.Payload()) != "again" {
			t.Fatalf("round %d: module got %q", round, m.Payload())
		}

		// A publisher still sending when the hub stops.
		flooding := make(chan struct{})
		go func() {
			defer close(flooding)
			for i := 0; ; i++ {
				tok := pub.Publish("devices/d/messages/events/", 1, false, fmt.Sprint(i))
				if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil || !pub.IsConnectionOpen() {
					return
				}
			}
		}()
		waitFor(t, "messages flowing", func() bool { return h.Stats().Delivered > 10 })
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("round %d: hub Run: %v", round, err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("round %d: the hub did not stop", round)
		}
		<-flooding
		pub.Disconnect(0)
		mod.Disconnect(0)
	}
	if n := settledGoroutines(); n > base {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines after 4 hubs, %d before: leaked\n%s", n, base, buf[:runtime.Stack(buf, true)])
	}
}
