package hub

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// refusingHook lets every client in and refuses subscriptions to one
// filter while refuse is set: a broker that answers a SUBSCRIBE with
// 0x80, as a clustered broker does while its store elects a leader
// after a node died (nats-server: "Unable to add JetStream consumer for
// subscription").
type refusingHook struct {
	mqtt.HookBase
	filter  string
	refuse  atomic.Bool
	refused atomic.Int32
}

func (h *refusingHook) ID() string { return "refusing" }
func (h *refusingHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}
func (h *refusingHook) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }
func (h *refusingHook) OnACLCheck(_ *mqtt.Client, topic string, write bool) bool {
	if !write && topic == h.filter && h.refuse.Load() {
		h.refused.Add(1)
		return false
	}
	return true
}

// refusingBroker is a mochi broker (its own, not a hub) on a free port.
func refusingBroker(t *testing.T, filter string) (*mqtt.Server, *refusingHook, string) {
	t.Helper()
	s := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	h := &refusingHook{filter: filter}
	h.refuse.Store(true)
	if err := s.AddHook(h, nil); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	if err := s.AddListener(listeners.NewTCP(listeners.Config{ID: "t", Address: addr})); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, h, "tcp://" + addr
}

// TestLinkSubscriptionRefused: a broker that refuses the deployment
// topic's subscription (SUBACK 0x80) at first: the link says so in its
// status and tries again until the broker takes it, and the retained
// deployment arrives.
func TestLinkSubscriptionRefused(t *testing.T) {
	topic := "ledge/dev-refused/deployment"
	b, hook, url := refusingBroker(t, topic)
	l, err := NewLink(UpstreamConfig{Mode: "mqtt", URL: url, TopicTemplate: "ledge/{deviceId}/events", KeepAlive: 5 * time.Second}, "dev-refused", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 10)
	if _, err := l.Subscribe(topic, 1, func(_ string, p []byte) { got <- string(p) }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(l.Status().LastError, "refused") {
		if time.Now().After(deadline) {
			t.Fatalf("the link's status does not say the subscription was refused: %+v (refused %d times)", l.Status(), hook.refused.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := b.Publish(topic, []byte("manifest"), true, 1); err != nil {
		t.Fatal(err)
	}
	hook.refuse.Store(false)
	select {
	case p := <-got:
		if p != "manifest" {
			t.Fatalf("got %q", p)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the retained deployment did not arrive once the broker took the subscription (refused %d times; status %+v)", hook.refused.Load(), l.Status())
	}
	// Taken: the status no longer says it failed.
	deadline = time.Now().Add(10 * time.Second)
	for strings.Contains(l.Status().LastError, topic) {
		if time.Now().After(deadline) {
			t.Fatalf("the link's status still says the subscription failed: %+v", l.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
