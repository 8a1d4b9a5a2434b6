package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// pahoUpstream implements Upstream on paho, as the hub's bridge does in
// appliance: subscriptions survive reconnects, Connect does not fail while
// the broker is down.
type pahoUpstream struct {
	c    mqtt.Client
	mu   sync.Mutex // guards subs
	subs map[string]func([]byte)
}

func newPahoUpstream(t testing.TB, addr string) *pahoUpstream {
	u := &pahoUpstream{subs: map[string]func([]byte){}}
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(fmt.Sprintf("ledge-agent-test-%s-%d", testRun, instanceSeq.Add(1))).
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(200 * time.Millisecond).
		SetMaxReconnectInterval(time.Second).SetCleanSession(true).
		SetOnConnectHandler(func(c mqtt.Client) {
			u.mu.Lock()
			defer u.mu.Unlock()
			for topic, h := range u.subs {
				c.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) { h(m.Payload()) })
			}
		})
	u.c = mqtt.NewClient(opts)
	u.c.Connect() // retries in the background
	t.Cleanup(func() { u.c.Disconnect(100) })
	return u
}

func (u *pahoUpstream) Subscribe(topic string, h func([]byte)) (func(), error) {
	u.mu.Lock()
	u.subs[topic] = h
	u.mu.Unlock()
	if u.c.IsConnectionOpen() {
		u.c.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) { h(m.Payload()) })
	}
	return func() {
		u.mu.Lock()
		delete(u.subs, topic)
		u.mu.Unlock()
		u.c.Unsubscribe(topic)
	}, nil
}

func (u *pahoUpstream) Publish(ctx context.Context, topic string, payload []byte, retain bool) error {
	if !u.c.IsConnectionOpen() {
		return errors.New("upstream not connected")
	}
	tok := u.c.Publish(topic, 1, retain, payload)
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// publishRetained puts a retained message on the broker, as the cloud
// would.
func publishRetained(t testing.TB, addr, topic string, payload []byte) {
	t.Helper()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("cloud-" + testRun))
	if tok := c.Connect(); tok.WaitTimeout(5*time.Second) && tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c.Disconnect(100)
	if tok := c.Publish(topic, 1, true, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
}

// TestMQTTDeployment: a manifest published as a retained message on the
// device's deployment topic of a real mosquitto is applied; an older
// version is ignored, a newer one wins; the reported state is published
// back (retained); a bad manifest is refused and reported, and the
// running deployment stays. Then, with mosquitto down and the modules
// stopped (a power cut), a new ledge applies the persisted manifest at
// boot and everything starts.
func TestMQTTDeployment(t *testing.T) {
	mq := startMosquitto(t)
	up := newPahoUpstream(t, mq.addr)
	withUpstream := func(o *Options) {
		o.Upstream = up
		o.Config.Sources.MQTT.Enabled = true
	}
	ta := newTestAgent(t, withUpstream)
	topic := "ledge/dev-" + ta.instance + "/deployment"

	publishRetained(t, mq.addr, topic, []byte(manifestYAML("10", "web "+imgApp+" always 0")))
	ta.waitState("10", StateConverged, 30*time.Second)

	// The reported state arrives upstream, retained.
	got := make(chan []byte, 10)
	watcher := newPahoUpstream(t, mq.addr)
	watcher.Subscribe("ledge/dev-"+ta.instance+"/deployment/reported", func(p []byte) { got <- append([]byte(nil), p...) })
	waitFor(t, 15*time.Second, func() (bool, string) {
		select {
		case p := <-got:
			var rep Reported
			if err := json.Unmarshal(p, &rep); err != nil {
				return false, err.Error()
			}
			return rep.LastDesiredStatus.Code == 200 && rep.Modules["web"].RuntimeStatus == StatusRunning, string(p)
		default:
			return false, "no reported state upstream"
		}
	})

	// Older: ignored. Newer: applied.
	mark := ta.mark()
	publishRetained(t, mq.addr, topic, []byte(manifestYAML("9", "old "+imgApp+" always 0")))
	ta.waitLog(mark, 10*time.Second, `msg="remote manifest ignored"`, `version \"9\" is not newer`)
	if d := ta.Reported().Deployment; d.Version != "10" {
		t.Fatalf("an older version was applied: %+v", d)
	}
	publishRetained(t, mq.addr, topic, []byte(manifestYAML("11", "web "+imgApp+" always 0", "api "+imgApp+" always 1")))
	ta.waitState("11", StateConverged, 30*time.Second)

	// Bad: refused, reported, nothing changes.
	before := ta.containers()
	publishRetained(t, mq.addr, topic, []byte(manifestYAML("12", "web "+imgApp+" sometimes 0")))
	waitFor(t, 10*time.Second, func() (bool, string) {
		rep := ta.Reported()
		return rep.Rejected != nil && rep.LastDesiredStatus.Code == 400, fmt.Sprintf("%+v", rep.LastDesiredStatus)
	})
	if rep := ta.Reported(); rep.Deployment.Version != "11" || rep.Rejected.Source != SourceMQTT {
		t.Errorf("after a bad manifest: deployment %s, rejection %+v", rep.Deployment.Version, rep.Rejected)
	}
	assertUnchanged(t, before, ta.containers())

	// Power cut: ledge stops, the modules stop, the upstream is down.
	ta.stop()
	for _, c := range before {
		stopContainer(t, c.ID)
	}
	mq.stop()
	// The machine "rebooted" after the modules stopped.
	ta.start(withUpstream, func(o *Options) { o.bootTime = time.Now() })
	ta.waitState("11", StateConverged, 30*time.Second)
	after := ta.containers()
	for name, c := range after {
		if !c.Running || c.ID != before[name].ID {
			t.Errorf("%s after boot with the upstream down: running %v, container %.12s (was %.12s)", name, c.Running, c.ID, before[name].ID)
		}
	}
}

func stopContainer(t testing.TB, id string) {
	t.Helper()
	if err := (&engine{cli: docker(t)}).stop(t.Context(), id, time.Second); err != nil {
		t.Fatal(err)
	}
}

// assertUnchanged fails when a container was recreated or restarted.
func assertUnchanged(t testing.TB, before, after map[string]ctr) {
	t.Helper()
	if len(before) != len(after) {
		t.Errorf("containers changed: %d before, %d after", len(before), len(after))
	}
	for name, b := range before {
		a := after[name]
		if a.ID != b.ID || !a.StartedAt.Equal(b.StartedAt) || a.Running != b.Running {
			t.Errorf("%s changed: %.12s started %s -> %.12s started %s", name, b.ID, b.StartedAt, a.ID, a.StartedAt)
		}
	}
}
