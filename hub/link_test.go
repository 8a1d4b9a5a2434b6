package hub

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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

// lockedBuffer is a log destination safe for concurrent writes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// runLink runs a link of cfg until the test ends; its log goes to the
// returned buffer.
func runLink(t *testing.T, cfg UpstreamConfig) (*Link, *lockedBuffer) {
	t.Helper()
	var logs lockedBuffer
	l, err := NewLink(cfg, "dev-why", slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return l, &logs
}

// TestUpstreamSaysWhyItCannotConnect: an upstream broker that is down at
// start, or that refuses the credentials, is named with its reason in the
// status and in the log (one WARN, then an INFO when it connects), not a
// bare "connecting" forever.
func TestUpstreamSaysWhyItCannotConnect(t *testing.T) {
	m := newMosquitto(t, "")
	l, logs := runLink(t, UpstreamConfig{Mode: "mqtt", URL: m.url(), TopicTemplate: "ledge/{deviceId}/events", KeepAlive: 5 * time.Second})
	waitFor(t, "the reason in the status", func() bool { return strings.Contains(l.Status().LastError, "connection refused") })
	if st := l.Status(); st.State != "connecting" {
		t.Errorf("state %q while the broker is down, want connecting", st.State)
	}
	waitFor(t, "a WARN in the log", func() bool {
		return strings.Contains(logs.String(), `level=WARN msg="upstream failing"`) && strings.Contains(logs.String(), "connection refused")
	})
	m.start()
	waitFor(t, "the connection", l.Connected)
	waitFor(t, "an INFO on recovery", func() bool { return strings.Contains(logs.String(), `level=INFO msg="upstream recovered"`) })
	if e := l.Status().LastError; e != "" {
		t.Errorf("connected, the status still shows the outage's reason %q", e)
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 {
		t.Errorf("%d WARNs for one outage, want 1:\n%s", n, logs)
	}

	// Wrong credentials: the broker's refusal, and which keys to check.
	dir := t.TempDir()
	pw := filepath.Join(dir, "passwd")
	if out, err := exec.Command("mosquitto_passwd", "-b", "-c", pw, "gw", "right").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v %s", err, out)
	}
	os.Chmod(pw, 0o600)
	auth := newMosquitto(t, "allow_anonymous false\npassword_file "+pw+"\n")
	auth.start()
	l2, logs2 := runLink(t, UpstreamConfig{Mode: "mqtt", URL: auth.url(), Username: "gw", Password: "wrong-secret",
		TopicTemplate: "ledge/{deviceId}/events", KeepAlive: 5 * time.Second})
	waitFor(t, "the refusal in the status", func() bool { return strings.Contains(l2.Status().LastError, "hub.upstream.username") })
	waitFor(t, "the refusal in the log", func() bool { return strings.Contains(logs2.String(), `level=WARN msg="upstream failing"`) })
	if s := l2.Status().LastError + logs2.String(); !strings.Contains(s, "not Authorized") && !strings.Contains(s, "bad user name or password") {
		t.Errorf("the refusal does not say what the broker answered: %s", s)
	}
	if strings.Contains(logs2.String(), "wrong-secret") {
		t.Errorf("the password is in the log")
	}
}
