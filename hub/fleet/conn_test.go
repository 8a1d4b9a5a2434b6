package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"ledge/internal/testenv"
	"ledge/internal/testenv/natstest"
)

// syncLog is a log the test reads while the code writes it.
type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// refusing lets every client in and refuses subscriptions to one filter
// while refuse is set (SUBACK 0x80), as a clustered broker does while
// its store elects a leader after a node died.
type refusing struct {
	mqtt.HookBase
	filter  string
	refuse  atomic.Bool
	refused atomic.Int32
}

func (h *refusing) ID() string { return "refusing" }
func (h *refusing) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}
func (h *refusing) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }
func (h *refusing) OnACLCheck(_ *mqtt.Client, topic string, write bool) bool {
	if !write && topic == h.filter && h.refuse.Load() {
		h.refused.Add(1)
		return false
	}
	return true
}

// mochiBroker runs a mochi broker with hooks on a free port.
func mochiBroker(t *testing.T, hooks ...mqtt.Hook) (*mqtt.Server, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s, _ := mochiBrokerOn(t, addr, hooks...)
	return s, "tcp://" + addr
}

// mochiBrokerOn runs a mochi broker with hooks on addr, until stop or
// the test's end.
func mochiBrokerOn(t *testing.T, addr string, hooks ...mqtt.Hook) (s *mqtt.Server, stop func()) {
	t.Helper()
	s = mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	for _, h := range hooks {
		if err := s.AddHook(h, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AddListener(listeners.NewTCP(listeners.Config{ID: "t", Address: addr})); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	stop = sync.OnceFunc(func() { s.Close() })
	t.Cleanup(stop)
	return s, stop
}

// dropOnProbe drops a client's connection at its first subscription to
// a probe, as a cluster node does that goes away while a client syncs.
type dropOnProbe struct {
	mqtt.HookBase
	dropped atomic.Int32
}

func (h *dropOnProbe) ID() string { return "drop-on-probe" }
func (h *dropOnProbe) Provides(b byte) bool {
	return b == mqtt.OnSubscribe
}
func (h *dropOnProbe) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	for _, f := range pk.Filters {
		if strings.HasPrefix(f.Filter, "ledge/fleet/sync/") && h.dropped.CompareAndSwap(0, 1) {
			cl.Stop(fmt.Errorf("dropped by the test"))
		}
	}
	return pk
}

// TestConnLostWhileSyncing: the first connection drops while Dial syncs
// it; Dial goes on with the next one instead of failing.
func TestConnLostWhileSyncing(t *testing.T) {
	allow := &refusing{}
	drop := &dropOnProbe{}
	s, url := mochiBroker(t, allow, drop)
	st, _ := json.Marshal(DeviceState{DeviceID: "dev-1"})
	if err := s.Publish(DefaultTopics.State("dev-1"), st, true, 1); err != nil {
		t.Fatal(err)
	}
	c, err := Dial(t.Context(), ConnConfig{URLs: []string{url}, ClientID: "lost-test", Topics: DefaultTopics})
	if err != nil {
		t.Fatalf("Dial: %v (dropped %d)", err, drop.dropped.Load())
	}
	defer c.Close()
	if drop.dropped.Load() != 1 {
		t.Fatal("the connection was not dropped: the test proves nothing")
	}
	if d := c.View().Snapshot(nil).Devices["dev-1"]; d == nil {
		t.Fatal("the view has no dev-1")
	}
}

// TestConnForgetsWhatWentWhileAway: the broker restarts without some of
// the retained messages the view held (a deployment deleted, a device
// removed, the lease given up while the connection was down); once the
// connection is synced again, the view no longer has them.
func TestConnForgetsWhatWentWhileAway(t *testing.T) {
	keys := testKeys()
	def := &Definition{Name: "gone", Generation: 1, Created: time.Now().UTC(), Target: "tags.site = 'x'",
		Rollout: Policy{Waves: []string{"100%"}}, State: StateActive, Manifest: "m"}
	sealed, err := Seal(def, keys)
	if err != nil {
		t.Fatal(err)
	}
	st1, _ := json.Marshal(DeviceState{DeviceID: "dev-1"})
	st2, _ := json.Marshal(DeviceState{DeviceID: "dev-2"})
	lease, _ := json.Marshal(Lease{Holder: "old", Until: time.Now().Add(time.Hour).UTC()})
	retain := func(s *mqtt.Server, topic string, b []byte) {
		if err := s.Publish(topic, b, true, 1); err != nil {
			t.Fatal(err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s, stop := mochiBrokerOn(t, addr, &refusing{})
	url := "tcp://" + addr
	retain(s, DefaultTopics.State("dev-1"), st1)
	retain(s, DefaultTopics.State("dev-2"), st2)
	retain(s, DefaultTopics.Definition("gone"), sealed)
	retain(s, DefaultTopics.Lease(), lease)
	c, err := Dial(t.Context(), ConnConfig{URLs: []string{url}, ClientID: "away-test", Topics: DefaultTopics})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	snap := c.View().Snapshot(keys)
	if snap.Definitions["gone"] == nil || snap.Devices["dev-2"] == nil || snap.Lease == nil {
		t.Fatalf("the view before: definitions %v, devices %v, lease %v", snap.Definitions, snap.DeviceIDs(), snap.Lease)
	}
	// The broker comes back with dev-1's state only.
	stop()
	waitUntil(t, 10*time.Second, "the connection lost", func() bool { return !c.View().Snapshot(nil).Connected })
	s2, _ := mochiBrokerOn(t, addr, &refusing{})
	retain(s2, DefaultTopics.State("dev-1"), st1)
	waitUntil(t, 30*time.Second, "the connection synced again", func() bool { return c.View().Snapshot(nil).Connected })
	snap = c.View().Snapshot(keys)
	if snap.Definitions["gone"] != nil || snap.Devices["dev-2"] != nil || snap.Lease != nil {
		t.Errorf("the view kept what the broker no longer holds: definitions %v, devices %v, lease %v", snap.Definitions, snap.DeviceIDs(), snap.Lease)
	}
	if snap.Devices["dev-1"] == nil || snap.Devices["dev-1"].State == nil {
		t.Errorf("the view lost dev-1, which the broker holds: %v", snap.DeviceIDs())
	}
}

// TestConnSubscriptionRefused: the broker refuses the fleet's
// subscription to device states for a while; Dial tries again and
// returns with the fleet whole, not with a view that never hears of a
// device.
func TestConnSubscriptionRefused(t *testing.T) {
	s := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	h := &refusing{filter: DefaultTopics.Filters()[0]}
	h.refuse.Store(true)
	if err := s.AddHook(h, nil); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	if err := s.AddListener(listeners.NewTCP(listeners.Config{ID: "t", Address: addr})); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	st, _ := json.Marshal(DeviceState{DeviceID: "dev-1", Tags: map[string]string{"site": "berlin"}})
	if err := s.Publish(DefaultTopics.State("dev-1"), st, true, 1); err != nil {
		t.Fatal(err)
	}
	go func() {
		for h.refused.Load() < 2 {
			time.Sleep(10 * time.Millisecond)
		}
		h.refuse.Store(false)
	}()
	c, err := Dial(t.Context(), ConnConfig{URLs: []string{"tcp://" + addr}, ClientID: "refused-test", Topics: DefaultTopics})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if d := c.View().Snapshot(nil).Devices["dev-1"]; d == nil || d.State == nil {
		t.Fatalf("the view has no dev-1 after the broker refused and then took the subscription (refused %d times)", h.refused.Load())
	}
	if n := h.refused.Load(); n < 2 {
		t.Fatalf("refused %d times, want the subscription tried again after a refusal", n)
	}
}

// TestConnPassesOverStaleNATSNode: in a three-node nats-server cluster,
// the node that hosts another node's index of retained messages dies;
// that other node (stale) still acknowledges retained messages but no
// longer hands new ones to new subscriptions. A fleet connection that
// lands on it notices (its probe does not come back), says so, and
// goes to the healthy node, where it sees a device that appeared after
// the kill.
func TestConnPassesOverStaleNATSNode(t *testing.T) {
	start := time.Now()
	nc := natstest.Start(t, 3, "fleet", "fleet-pw")
	victim, stale, healthy := nc.ChooseKill()
	t.Logf("cluster up in %s", time.Since(start).Round(time.Millisecond))
	t.Logf("killing %s: %s's retained index lives there, %s's does not", nc.Name(victim), nc.Name(stale), nc.Name(healthy))
	nc.Kill(victim)

	// A device appears after the kill, through the healthy node.
	pub := paho.NewClient(paho.NewClientOptions().AddBroker(nc.MQTT[healthy]).SetClientID("pub").
		SetUsername("fleet").SetPassword("fleet-pw").SetCleanSession(true))
	waitUntil(t, 60*time.Second, "a connection to the healthy node", func() bool {
		tok := pub.Connect()
		return tok.WaitTimeout(10*time.Second) && tok.Error() == nil
	})
	defer pub.Disconnect(0)
	st, _ := json.Marshal(DeviceState{DeviceID: "dev-after", Tags: map[string]string{"site": "berlin"}})
	// Published until the healthy node hands it to a new subscription:
	// while its JetStream leaders move, nats-server acknowledges a
	// retained message it fails to store.
	waitUntil(t, 90*time.Second, "the device's state retained", func() bool {
		tok := pub.Publish(DefaultTopics.State("dev-after"), 1, true, st)
		return tok.WaitTimeout(10*time.Second) && tok.Error() == nil &&
			retainedOn(t, nc.MQTT[healthy], DefaultTopics.State("+"), DefaultTopics.State("dev-after"))
	})

	t.Logf("dev-after retained through %s at %s", nc.Name(healthy), time.Since(start).Round(time.Millisecond))
	// The stale node does not hand it to a new subscription: the fault
	// this test is about is there.
	if retainedOn(t, nc.MQTT[stale], DefaultTopics.State("+"), DefaultTopics.State("dev-after")) {
		t.Fatalf("%s delivered the new retained state: it is not stale, the test proves nothing", nc.Name(stale))
	}

	var log syncLog
	t.Logf("dialing at %s", time.Since(start).Round(time.Millisecond))
	c, err := Dial(t.Context(), ConnConfig{URLs: []string{nc.MQTT[stale], nc.MQTT[healthy]}, Username: "fleet", Password: "fleet-pw",
		ClientID: "stale-test", Topics: DefaultTopics, ProbeTimeout: 3 * time.Second,
		Log: slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatalf("%v; log:\n%s", err, log.String())
	}
	defer c.Close()
	t.Logf("synced at %s", time.Since(start).Round(time.Millisecond))
	if d := c.View().Snapshot(nil).Devices["dev-after"]; d == nil {
		t.Fatalf("the fleet's view misses dev-after (connected to %s); log:\n%s", c.broker(), log.String())
	}
	if c.broker() != nc.MQTT[healthy] {
		t.Errorf("connected to %s, want the healthy node %s", c.broker(), nc.MQTT[healthy])
	}
	t.Logf("log:\n%s", log.String())
	if !strings.Contains(log.String(), "broker node passed over") || !strings.Contains(log.String(), nc.MQTT[stale]) {
		t.Errorf("the log does not say the stale node was passed over:\n%s", log.String())
	}
}

// retainedOn subscribes to filter on a new session at broker and says
// whether it is handed want, retained, within 3 s (the healthy node
// answers in milliseconds).
func retainedOn(t *testing.T, broker, filter, want string) bool {
	t.Helper()
	cli := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID(fmt.Sprintf("probe-%d", time.Now().UnixNano())).
		SetUsername("fleet").SetPassword("fleet-pw").SetCleanSession(true))
	waitUntil(t, 60*time.Second, "a connection to "+broker, func() bool {
		tok := cli.Connect()
		return tok.WaitTimeout(10*time.Second) && tok.Error() == nil
	})
	defer cli.Disconnect(0)
	got := make(chan struct{}, 1)
	waitUntil(t, 60*time.Second, "a subscription at "+broker, func() bool {
		tok := cli.Subscribe(filter, 0, func(_ paho.Client, m paho.Message) {
			if m.Retained() && m.Topic() == want {
				select {
				case got <- struct{}{}:
				default:
				}
			}
		})
		return tok.WaitTimeout(20*time.Second) && tok.Error() == nil && !Refused(tok, filter)
	})
	select {
	case <-got:
		return true
	case <-time.After(3 * time.Second):
		return false
	}
}

func waitUntil(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitPasses waits until ctl has ended two passes that began after the
// call (the first to end may have begun before it): what ctl's view
// held at the call, ctl has seen and acted on, and what it published
// then has had a pass's time to reach the devices. Tests call it before
// they say that something did not happen.
func waitPasses(t *testing.T, ctl *Controller) {
	t.Helper()
	n := ctl.Passes()
	waitUntil(t, 30*time.Second, "two passes of the controller", func() bool { return ctl.Passes() >= n+3 })
}

// convergedIn says whether snapshot s shows device id given deployment
// name and converged on what it was given.
func convergedIn(s *Snapshot, id, name string) bool {
	d := s.Devices[id]
	if d == nil || d.Assignment == nil || d.Assignment.Deployment != name || d.State == nil {
		return false
	}
	r := d.State.Properties.Reported.Deployment
	return r != nil && r.Digest == d.Assignment.Digest && r.State == "converged"
}

// waitSeen waits until ctl's own view shows what ok looks for (the
// test's connection may have it before ctl's does), then for two passes
// of ctl after that (waitPasses).
func waitSeen(t *testing.T, ctl *Controller, what string, ok func(*Snapshot) bool) {
	t.Helper()
	waitUntil(t, 30*time.Second, what+" in the controller's view", func() bool { return ok(ctl.Conn.View().Snapshot(ctl.Verifier)) })
	waitPasses(t, ctl)
}

// TestControllerResends: a device that was given a deployment but never
// got it (the broker lost the retained message before the device
// subscribed) is online and reports another deployment; the controller
// publishes the same manifest, same version, to it again, and the
// device converges on what it was given.
func TestControllerResends(t *testing.T) {
	addr, _ := simMosquitto(t)
	keys := testKeys()
	var dc simCounters
	// The device connects and says who it is, but takes no deployment yet.
	d := startSimDeviceLate(t, addr, 1, &dc)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	conn, err := Dial(ctx, ConnConfig{URLs: []string{"tcp://" + addr}, ClientID: "resend-controller", Topics: DefaultTopics})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var log syncLog
	ctl := &Controller{Conn: conn, ID: "resend-controller", Verifier: keys, Sealer: simSealer{keys}, Settle: 100 * time.Millisecond,
		Resend: time.Second, Log: slog.New(slog.NewTextHandler(&log, nil))}
	done := make(chan struct{})
	go func() { ctl.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	publishDefinition(t, conn, keys, "resend")
	var a *Assignment
	waitUntil(t, 30*time.Second, "the device's assignment", func() bool {
		if dev := conn.View().Snapshot(keys).Devices[d.id]; dev != nil && dev.Assignment != nil {
			a = dev.Assignment
		}
		return a != nil
	})
	// The broker loses the device's retained deployment; then the device
	// subscribes and finds nothing.
	if err := conn.Publish(ctx, DefaultTopics.Deployment(d.id), nil, true); err != nil {
		t.Fatal(err)
	}
	d.subscribe(&dc)
	waitUntil(t, 30*time.Second, "the device converged on what it was given", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.converged == a.Digest
	})
	if got := conn.View().Snapshot(keys).Devices[d.id].Assignment; got.Version != a.Version {
		t.Errorf("assignment %s, want the same version %s again", got.Version, a.Version)
	}
	if !strings.Contains(log.String(), "publishing it again") {
		t.Errorf("the controller's log does not say it published the deployment again:\n%s", log.String())
	}
}

// forgetsRetained acknowledges the first retained publish on each
// assignment topic and does not retain it (it still delivers it live),
// as nats-server does while its JetStream leaders move after a node
// died ("unable to store retained message", the PUBACK sent anyway).
type forgetsRetained struct {
	mqtt.HookBase
	mu     sync.Mutex
	seen   map[string]bool
	forgot atomic.Int32
}

func (h *forgetsRetained) ID() string { return "forgets-retained" }
func (h *forgetsRetained) Provides(b byte) bool {
	return b == mqtt.OnPublish
}
func (h *forgetsRetained) OnPublish(_ *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if !pk.FixedHeader.Retain || len(pk.Payload) == 0 || !strings.HasPrefix(pk.TopicName, DefaultTopics.Assignment("")) {
		return pk, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.seen[pk.TopicName] {
		h.seen[pk.TopicName] = true
		pk.FixedHeader.Retain = false
		h.forgot.Add(1)
	}
	return pk, nil
}

// TestControllerRepairsLostRecords: the broker acknowledges the
// controller's assignment records and does not retain them; the
// controller reads them back, publishes them again, and a client that
// comes later (a controller after a restart, ledge fleet status) sees
// what each device was given.
func TestControllerRepairsLostRecords(t *testing.T) {
	forget := &forgetsRetained{seen: map[string]bool{}}
	_, url := mochiBroker(t, &refusing{}, forget)
	addr := strings.TrimPrefix(url, "tcp://")
	keys := testKeys()
	var dc simCounters
	devs := []*simDevice{startSimDevice(t, addr, 1, &dc), startSimDevice(t, addr, 2, &dc)}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	conn, err := Dial(ctx, ConnConfig{URLs: []string{url}, ClientID: "repair-controller", Topics: DefaultTopics})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var log syncLog
	ctl := &Controller{Conn: conn, ID: "repair-controller", Verifier: keys, Sealer: simSealer{keys}, Settle: 100 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(&log, nil))}
	done := make(chan struct{})
	go func() { ctl.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	publishDefinition(t, conn, keys, "repair")
	waitUntil(t, 30*time.Second, "the rollout completed", func() bool {
		r := conn.View().Snapshot(keys).Rollouts["repair"]
		return r != nil && r.Phase == PhaseCompleted
	})
	// A client that comes later sees both assignments.
	waitUntil(t, 30*time.Second, "the assignments held by the broker", func() bool {
		later, err := Dial(ctx, ConnConfig{URLs: []string{url}, ClientID: fmt.Sprintf("later-%d", time.Now().UnixNano()), Topics: DefaultTopics})
		if err != nil {
			t.Fatal(err)
		}
		defer later.Close()
		s := later.View().Snapshot(keys)
		for _, d := range devs {
			if a := s.Devices[d.id].Assignment; a == nil || a.Deployment != "repair" {
				return false
			}
		}
		return true
	})
	if forget.forgot.Load() != 2 {
		t.Fatalf("the broker forgot %d records, want 2: the test proves nothing", forget.forgot.Load())
	}
	if !strings.Contains(log.String(), "records it does not hold") {
		t.Errorf("the controller's log does not say it published lost records again:\n%s", log.String())
	}
	for _, d := range devs {
		d.mu.Lock()
		conv := d.converged
		d.mu.Unlock()
		if a := conn.View().Snapshot(keys).Devices[d.id].Assignment; conv != a.Digest {
			t.Errorf("%s converged on %q, was given %q", d.id, conv, a.Digest)
		}
	}
}

// dropsFrom drops, without an answer, the publishes of one client to the
// topics with a prefix: the client waits for acknowledgements that never
// come, as a controller that died at that point never sent them.
type dropsFrom struct {
	mqtt.HookBase
	client, prefix string
	dropped        atomic.Int32
}

func (h *dropsFrom) ID() string { return "drops-from" }
func (h *dropsFrom) Provides(b byte) bool {
	return b == mqtt.OnPublish
}
func (h *dropsFrom) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.ID == h.client && strings.HasPrefix(pk.TopicName, h.prefix) && len(pk.Payload) > 0 {
		h.dropped.Add(1)
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

// TestControllerTakeoverGivesOnce: a controller dies in the middle of
// giving two devices their deployment, another takes over, and each
// device takes the deployment once, under one version. The first
// controller dies (its publishes stop reaching the broker) after its
// manifests and before its assignment records, or after its records and
// before its manifests; with manifests first, the second controller gave
// the devices the deployment again under a new version.
func TestControllerTakeoverGivesOnce(t *testing.T) {
	for _, c := range []struct{ name, prefix string }{
		{"before its records", DefaultTopics.Assignment("")},
		{"before its manifests", DefaultTopics.Deployment("sim-")[:len("ledge/sim-")]},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := &dropsFrom{client: "first", prefix: c.prefix}
			_, url := mochiBroker(t, &refusing{}, h)
			addr := strings.TrimPrefix(url, "tcp://")
			keys := testKeys()
			var dc simCounters
			devs := []*simDevice{startSimDevice(t, addr, 1, &dc), startSimDevice(t, addr, 2, &dc)}
			run := func(id string) (ctl *Controller, stop func()) {
				ctx, cancel := context.WithCancel(t.Context())
				conn, err := Dial(ctx, ConnConfig{URLs: []string{url}, ClientID: id, Topics: DefaultTopics})
				if err != nil {
					t.Fatal(err)
				}
				// Resend a minute after: only taking over can give the
				// devices their manifests within the test's wait.
				ctl = &Controller{Conn: conn, ID: id, Verifier: keys, Sealer: simSealer{keys}, Settle: 100 * time.Millisecond,
					Resend: time.Minute}
				done := make(chan struct{})
				go func() { ctl.Run(ctx); close(done) }()
				return ctl, func() { cancel(); <-done; conn.Close() }
			}
			_, stopFirst := run("first")
			pub, err := Dial(t.Context(), ConnConfig{URLs: []string{url}, ClientID: "cli", Topics: DefaultTopics})
			if err != nil {
				t.Fatal(err)
			}
			defer pub.Close()
			publishDefinition(t, pub, keys, "once")
			waitUntil(t, 30*time.Second, "the first controller stopped short", func() bool { return h.dropped.Load() >= 2 })
			stopFirst()
			second, stopSecond := run("second")
			defer stopSecond()
			waitUntil(t, 30*time.Second, "both devices converged on what they were given", func() bool {
				s := pub.View().Snapshot(keys)
				return allConverged(devs, func(d *simDevice) bool {
					a := s.Devices[d.id].Assignment
					return a != nil && d.converged == a.Digest
				})
			})
			// Anything more would come in a pass that saw them converged.
			waitSeen(t, second, "both devices converged", func(s *Snapshot) bool {
				for _, d := range devs {
					if !convergedIn(s, d.id, "once") {
						return false
					}
				}
				return true
			})
			for _, d := range devs {
				d.mu.Lock()
				if len(d.versions) != 1 {
					t.Errorf("%s took the deployment %d times (versions %v), want once", d.id, len(d.versions), d.versions)
				}
				d.mu.Unlock()
			}
		})
	}
}

// publishDefinition publishes a signed definition name for every device
// (one wave, manifest "<name> manifest") through conn.
func publishDefinition(t *testing.T, conn *Conn, keys edKeys, name string) {
	t.Helper()
	def := &Definition{Name: name, Generation: 1, Created: time.Now().UTC(), Target: "tags.site != 'nowhere'",
		Rollout: Policy{Waves: []string{"100%"}}, State: StateActive, Manifest: name + " manifest"}
	sealed, err := Seal(def, keys)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Publish(t.Context(), DefaultTopics.Definition(name), sealed, true); err != nil {
		t.Fatal(err)
	}
}

// TestControllerRefusesReplayedDefinition (audit finding 6, medium): a
// client that may publish on the fleet's topics (no broker ACL, or a
// device's credentials where ACLs are loose) replays a deployment's
// older signed definition; the signature is good, and the controller
// rolled the old manifest out again under a new version, which the
// devices took. Now a definition whose generation is below one the
// controller saw, or one the broker's rollout and assignment records
// name, is refused (and said so); the devices keep what they have.
func TestControllerRefusesReplayedDefinition(t *testing.T) {
	pub := testenv.Command(t, "mosquitto_pub", "mosquitto-clients")
	addr, _ := simMosquitto(t)
	keys := testKeys()
	var dc simCounters
	d := startSimDevice(t, addr, 1, &dc)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	conn, err := Dial(ctx, ConnConfig{URLs: []string{"tcp://" + addr}, ClientID: "replay-controller", Topics: DefaultTopics})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var log syncLog
	ctl := &Controller{Conn: conn, ID: "replay-controller", Verifier: keys, Sealer: simSealer{keys}, Settle: 100 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(&log, nil))}
	done := make(chan struct{})
	go func() { ctl.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	seal := func(gen int64, manifest string) []byte {
		t.Helper()
		def := &Definition{Name: "people", Generation: gen, Created: time.Unix(1700000000, 0).UTC(), Target: "tags.site != 'nowhere'",
			Rollout: Policy{Waves: []string{"100%"}}, State: StateActive, Manifest: manifest}
		b, err := Seal(def, keys)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	taken := func() int {
		d.mu.Lock()
		defer d.mu.Unlock()
		return len(d.versions)
	}
	converge := func(payload []byte, n int) {
		t.Helper()
		if err := conn.Publish(ctx, DefaultTopics.Definition("people"), payload, true); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, 30*time.Second, fmt.Sprintf("deployment %d taken and converged", n), func() bool {
			d.mu.Lock()
			defer d.mu.Unlock()
			return len(d.versions) == n && d.converged == d.taken
		})
	}
	old := seal(1, "people manifest A")
	converge(old, 1)
	converge(seal(2, "people manifest B"), 2)

	// The attacker replays generation 1, retained, as mosquitto_pub does.
	f := filepath.Join(t.TempDir(), "old")
	os.WriteFile(f, old, 0o600)
	host, port, _ := net.SplitHostPort(addr)
	if out, err := exec.Command(pub, "-h", host, "-p", port, "-r", "-q", "1", "-t", DefaultTopics.Definition("people"), "-f", f).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v %s", err, out)
	}
	waitUntil(t, 30*time.Second, "the replayed definition replaced", func() bool {
		return strings.Contains(log.String(), "replayed fleet deployment replaced") || taken() > 2
	})
	// The replay was seen in the pass that said so.
	waitPasses(t, ctl)
	if n := taken(); n != 2 {
		t.Fatalf("the device took %d deployments: the replayed generation 1 was rolled out again", n)
	}
	logged := log.String()
	if !strings.Contains(logged, "fleet deployment refused") || !strings.Contains(logged, "generation 1 is older than generation 2") {
		t.Errorf("the controller's log does not say it refused the replay, naming both generations:\n%s", logged)
	}
	// The broker holds generation 2 again, as signed: what any client
	// subscribing now is given (mosquitto_sub, not the controller's view).
	sub := testenv.Command(t, "mosquitto_sub", "mosquitto-clients")
	out, err := exec.Command(sub, "-h", host, "-p", port, "-C", "1", "-W", "10", "-t", DefaultTopics.Definition("people")).Output()
	if err != nil {
		t.Fatalf("mosquitto_sub: %v", err)
	}
	if d, _, err := Open(bytes.TrimRight(out, "\n"), keys, "people"); err != nil || d.Generation != 2 || d.Manifest != "people manifest B" {
		t.Fatalf("the broker retains %s after the replay (%v), want generation 2 put back", out, err)
	}
	// The operator deploys again: above what was seen, and rolled out.
	if g := NextGeneration(conn.View().Snapshot(keys), "people"); g != 3 {
		t.Errorf("NextGeneration after the replay: %d, want 3", g)
	}
}

// TestViewBoundsRecords (audit finding 11, low): a device publishes its
// state document, as it should, but of 8 MiB (mosquitto takes up to 256
// MiB): every fleet client kept it and the controller parsed it on
// every pass (each second). Now records over their kind's bound (a state
// document 64 KiB, presence 4 KiB, a definition 1 MiB) are not kept,
// and the snapshot names them, so the controller says so once.
func TestViewBoundsRecords(t *testing.T) {
	addr, _ := simMosquitto(t)
	keys := testKeys()
	var dc simCounters
	d := startSimDevice(t, addr, 7, &dc)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	conn, err := Dial(ctx, ConnConfig{URLs: []string{"tcp://" + addr}, ClientID: "bounds", Topics: DefaultTopics})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	big := []byte(`{"deviceId":"` + d.id + `","tags":{"site":"` + strings.Repeat("x", 8<<20) + `"}}`)
	if tok := d.cli.Publish(DefaultTopics.State(d.id), 1, true, big); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	waitUntil(t, 30*time.Second, "the big state at the fleet client", func() bool {
		s := conn.View().Snapshot(keys)
		_, refused := s.Oversized[DefaultTopics.State(d.id)]
		return refused || (s.Devices[d.id] != nil && len(s.Devices[d.id].Doc) > 1<<20)
	})
	s := conn.View().Snapshot(keys)
	if dev := s.Devices[d.id]; dev != nil && len(dev.Doc) > 64<<10 {
		t.Fatalf("the fleet keeps and parses a state document of %d bytes", len(dev.Doc))
	}
	if n := s.Oversized[DefaultTopics.State(d.id)]; n != len(big) {
		t.Errorf("the snapshot names the oversized state with %d bytes, want %d", n, len(big))
	}
	// A state of the right size afterwards is taken again.
	d.publishState(&dc)
	waitUntil(t, 30*time.Second, "the state of the right size", func() bool {
		dev := conn.View().Snapshot(keys).Devices[d.id]
		return dev != nil && dev.State != nil && dev.State.DeviceID == d.id
	})
}

// TestControllerIgnoresForgedDeviceID (outside-in audit of issue 14): a
// device whose broker ACL lets it publish only its own state topic (as
// docs/fleet.md recommends) wrote another device's id into its state
// document's deviceId, and the controller gave it the deployment
// targeted at that other device (`deviceId = 'x'`, Azure's way to target
// one device): its manifest, with whatever it holds. A state document
// whose deviceId is not its topic's device is now not taken, and the
// controller says so once.
func TestControllerIgnoresForgedDeviceID(t *testing.T) {
	addr, _ := simMosquitto(t)
	keys := testKeys()
	var dc simCounters
	victim := startSimDevice(t, addr, 1, &dc)
	forger := startSimDevice(t, addr, 2, &dc)
	forger.mu.Lock()
	forger.doc.DeviceID = victim.id
	forger.mu.Unlock()
	forger.publishState(&dc) // on its own topic: the ACL lets it

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	conn, err := Dial(ctx, ConnConfig{URLs: []string{"tcp://" + addr}, ClientID: "forged-controller", Topics: DefaultTopics})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var log syncLog
	ctl := &Controller{Conn: conn, ID: "forged-controller", Verifier: keys, Sealer: simSealer{keys}, Settle: 100 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(&log, nil))}
	done := make(chan struct{})
	go func() { ctl.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	def := &Definition{Name: "only-victim", Generation: 1, Created: time.Now().UTC(), Target: "deviceId = '" + victim.id + "'",
		Rollout: Policy{Waves: []string{"100%"}}, State: StateActive, Manifest: "only-victim manifest"}
	sealed, err := Seal(def, keys)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Publish(ctx, DefaultTopics.Definition(def.Name), sealed, true); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "the victim converged", func() bool {
		victim.mu.Lock()
		defer victim.mu.Unlock()
		return victim.converged != ""
	})
	// The forged state was on the broker before the controller started:
	// the pass that gave the victim its deployment saw it.
	waitPasses(t, ctl)
	forger.mu.Lock()
	taken := forger.versions
	forger.mu.Unlock()
	if len(taken) != 0 {
		t.Fatalf("the device that forged another's deviceId was given its deployment: %v", taken)
	}
	s := conn.View().Snapshot(keys)
	if a := s.Devices[forger.id].Assignment; a != nil {
		t.Errorf("the forger has an assignment: %+v", a)
	}
	if st := StatusOf(s, def.Name); st.Targeted != 1 {
		t.Errorf("targeted %d, want 1 (the victim)", st.Targeted)
	}
	if why := s.Refused[DefaultTopics.State(forger.id)]; !strings.Contains(why, victim.id) {
		t.Errorf("the snapshot's refusal of the forged state: %q, want it to name the id it claims", why)
	}
	if !strings.Contains(log.String(), "state document refused") {
		t.Errorf("the controller's log does not say it refused the forged state:\n%s", log.String())
	}
}

// TestLastSeenOfOfflineDevice (outside-in audit of issue 14): `ledge
// fleet devices` showed every device "0s ago" in LAST SEEN, one killed
// hours before too: the time a retained message reached this client
// counted as the time the device was seen. An offline device is now
// last seen when its state says it published; an online one now (the
// broker vouches for its connection). Both devices published their
// states an hour ago, and the online one came online then (as a device
// that went away, or has said nothing since, did), so neither time can
// pass for the other.
func TestLastSeenOfOfflineDevice(t *testing.T) {
	addr, _ := simMosquitto(t)
	var dc simCounters
	gone := startSimDevice(t, addr, 1, &dc)
	here := startSimDevice(t, addr, 2, &dc)
	at := time.Now().Add(-time.Hour).UTC()
	publish := func(d *simDevice, topic string, payload []byte) {
		t.Helper()
		if tok := d.cli.Publish(topic, 1, true, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	for _, d := range []*simDevice{gone, here} {
		d.mu.Lock()
		d.doc.At = at
		b, _ := json.Marshal(d.doc)
		d.mu.Unlock()
		publish(d, DefaultTopics.State(d.id), b)
	}
	on, _ := json.Marshal(Presence{Online: true, Since: at})
	publish(here, DefaultTopics.Online(here.id), on)
	publish(gone, DefaultTopics.Online(gone.id), OfflinePayload)
	gone.cli.Disconnect(0)
	conn, err := Dial(t.Context(), ConnConfig{URLs: []string{"tcp://" + addr}, ClientID: "last-seen", Topics: DefaultTopics})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rows := Rows(conn.View().Snapshot(nil), nil)
	if len(rows) != 2 {
		t.Fatalf("rows: %+v", rows)
	}
	for _, r := range rows {
		switch r.ID {
		case gone.id:
			if r.Online || !r.LastSeen.Equal(at) {
				t.Errorf("%s, offline, its state an hour old: online %v, last seen %s ago, want %s (its state's time)", r.ID, r.Online, time.Since(r.LastSeen).Round(time.Millisecond), at)
			}
		case here.id:
			if !r.Online || time.Since(r.LastSeen) > time.Second {
				t.Errorf("%s, online, its state an hour old: online %v, last seen %s ago, want now", r.ID, r.Online, time.Since(r.LastSeen))
			}
		}
	}
}
