package hub

import (
	"context"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// TestLinkPresenceOfflineOnStop: an appliance's presence on a generic
// broker (the fleet's ledge/<device>/online, docs/fleet.md) says offline
// however the link ends. Its last will covers a crash or a lost
// connection; a clean stop (systemctl stop, a reboot) sends DISCONNECT,
// which makes the broker discard the will (MQTT 3.1.1, 3.14.4): the
// retained presence said online for good, `ledge fleet devices` showed
// the switched-off appliance online, and a rollout waited for it.
func TestLinkPresenceOfflineOnStop(t *testing.T) {
	m := newMosquitto(t, "")
	m.start()
	topic := "ledge/dev-presence/online"
	cfg := UpstreamConfig{Mode: "mqtt", URL: m.url(), TopicTemplate: "ledge/{deviceId}/events", KeepAlive: 5 * time.Second,
		Presence: &UpstreamPresence{Topic: topic, Online: func() []byte { return []byte(`{"online":true}`) }, Offline: []byte(`{"online":false}`)}}
	l, err := NewLink(cfg, "dev-presence", nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var last string
	o := paho.NewClientOptions().AddBroker(m.url()).SetClientID("presence-watch").SetCleanSession(true)
	watch := paho.NewClient(o)
	if tok := watch.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer watch.Disconnect(0)
	if tok := watch.Subscribe(topic, 1, func(_ paho.Client, msg paho.Message) {
		mu.Lock()
		last = string(msg.Payload())
		mu.Unlock()
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	presence := func() string {
		mu.Lock()
		defer mu.Unlock()
		return last
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "the link's presence online", func() bool { return presence() == `{"online":true}` })

	cancel()
	<-done
	waitFor(t, "the presence offline after a clean stop", func() bool { return presence() == `{"online":false}` })
	// Retained: a reader that comes later (ledge fleet devices) sees it.
	late := make(chan string, 1)
	watch.Unsubscribe(topic).WaitTimeout(10 * time.Second)
	if tok := watch.Subscribe(topic, 1, func(_ paho.Client, msg paho.Message) {
		if msg.Retained() {
			select {
			case late <- string(msg.Payload()):
			default:
			}
		}
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe again: %v", tok.Error())
	}
	select {
	case p := <-late:
		if p != `{"online":false}` {
			t.Errorf("the retained presence after a clean stop is %s, want offline", p)
		}
	case <-time.After(10 * time.Second):
		t.Error("no retained presence after a clean stop")
	}
}
