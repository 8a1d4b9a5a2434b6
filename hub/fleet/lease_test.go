package fleet

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Two or more controllers started at the same moment: one takes the
// lease and acts, the others wait. A controller that acted on a claim
// the broker had since replaced by another's would give the devices the
// deployment a second time (under a version from its own clock).

// leaseRound is a set of controllers started together.
type leaseRound struct {
	ids  []string
	logs []*syncLog
	stop func()
}

// acquired lists the controllers of the round that took the lease.
func (r *leaseRound) acquired() []string {
	var out []string
	for i, l := range r.logs {
		if n := strings.Count(l.String(), "fleet lease acquired"); n > 0 {
			out = append(out, fmt.Sprintf("%s (%d times)", r.ids[i], n))
		}
	}
	return out
}

// startTogether dials a connection for each id, then starts their
// controllers at the same moment.
func startTogether(t *testing.T, url string, keys edKeys, ids ...string) *leaseRound {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	r := &leaseRound{ids: ids}
	conns := make([]*Conn, len(ids))
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		r.logs = append(r.logs, &syncLog{})
		wg.Go(func() {
			conns[i], errs[i] = Dial(ctx, ConnConfig{URLs: []string{url}, ClientID: id, Topics: DefaultTopics,
				WillTopic: DefaultTopics.Controller(id), WillPayload: OfflinePayload})
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			cancel()
			t.Fatal(err)
		}
	}
	start := make(chan struct{})
	var done sync.WaitGroup
	for i, id := range ids {
		ctl := &Controller{Conn: conns[i], ID: id, Verifier: keys, Sealer: simSealer{keys}, Settle: 100 * time.Millisecond,
			Resend: time.Minute, Log: slog.New(slog.NewTextHandler(r.logs[i], nil))}
		done.Go(func() {
			<-start
			ctl.Run(ctx)
		})
	}
	close(start)
	r.stop = sync.OnceFunc(func() {
		cancel()
		done.Wait()
		for _, c := range conns {
			c.Close()
		}
	})
	t.Cleanup(r.stop)
	return r
}

// publishGeneration publishes generation gen of a one-wave deployment
// name for every device.
func publishGeneration(t *testing.T, conn *Conn, keys edKeys, name string, gen int64) *Definition {
	t.Helper()
	def := &Definition{Name: name, Generation: gen, Created: time.Unix(1700000000, 0).UTC(), Target: "tags.site != 'nowhere'",
		Rollout: Policy{Waves: []string{"100%"}}, State: StateActive, Manifest: fmt.Sprintf("%s manifest %d", name, gen)}
	sealed, err := Seal(def, keys)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Publish(t.Context(), DefaultTopics.Definition(name), sealed, true); err != nil {
		t.Fatal(err)
	}
	return def
}

// checkGivenOnce fails unless each device took exactly want deployments
// (one per generation).
func checkGivenOnce(t *testing.T, devs []*simDevice, want int) {
	t.Helper()
	for _, d := range devs {
		d.mu.Lock()
		if len(d.versions) != want {
			t.Errorf("%s took %d deployments (versions %v), want %d: one per generation", d.id, len(d.versions), d.versions, want)
		}
		d.mu.Unlock()
	}
}

// TestControllersStartedTogether: rounds of controllers started at the
// same moment against a real mosquitto, each round with a new generation
// of a deployment waiting for them. In every round exactly one takes the
// lease, and each device takes each generation once.
// LEDGE_FLEET_LEASE_ROUNDS sets the number of rounds (default 10). When a
// controller wrote what it published into its view once acknowledged,
// over a newer claim that had come meanwhile, two controllers took the
// lease and gave the devices the deployment twice in about one round of
// five or six; TestControllersCrossedClaims makes that interleaving on
// demand.
func TestControllersStartedTogether(t *testing.T) {
	rounds := 10
	if v, err := strconv.Atoi(os.Getenv("LEDGE_FLEET_LEASE_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	const controllers = 4
	addr, _ := simMosquitto(t)
	url := "tcp://" + addr
	keys := testKeys()
	var dc simCounters
	devs := []*simDevice{startSimDevice(t, addr, 1, &dc), startSimDevice(t, addr, 2, &dc), startSimDevice(t, addr, 3, &dc)}
	pub, err := Dial(t.Context(), ConnConfig{URLs: []string{url}, ClientID: "cli", Topics: DefaultTopics})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	for round := 1; round <= rounds; round++ {
		def := publishGeneration(t, pub, keys, "together", int64(round))
		var ids []string
		for i := range controllers {
			ids = append(ids, fmt.Sprintf("r%d-c%d", round, i))
		}
		r := startTogether(t, url, keys, ids...)
		waitUntil(t, 30*time.Second, fmt.Sprintf("round %d: every device converged on generation %d", round, round), func() bool {
			s := pub.View().Snapshot(keys)
			return allConverged(devs, func(d *simDevice) bool {
				a := s.Devices[d.id].Assignment
				return a != nil && a.Generation == def.Generation && d.converged == a.Digest
			})
		})
		// A controller that wrongly believes it holds the lease acts as
		// soon as its settle time (100 ms) is over: a second shows it.
		time.Sleep(time.Second)
		if got := r.acquired(); len(got) != 1 {
			t.Errorf("round %d: %d controllers took the lease, want 1: %v", round, len(got), got)
		}
		r.stop()
		checkGivenOnce(t, devs, round)
		if t.Failed() {
			return
		}
	}
}

// crossedClaims makes two controllers' lease claims cross in the broker
// as they can on any broker, deterministically: the first claim to
// arrive is held until a second arrives and is retained and handed to
// the subscribers; then the first is retained (the last: the broker
// holds it) and handed on; only then, a moment later, is the second
// acknowledged. The second controller receives its own claim back, then
// the first's, then its acknowledgement. A controller that took what it
// published as what the broker holds once acknowledged believed its own
// (replaced) claim held.
type crossedClaims struct {
	mqtt.HookBase
	mu            sync.Mutex
	first, second string
	secondOut     chan struct{} // the second claim was handed to the subscribers
	firstOut      chan struct{} // then the first
}

func newCrossedClaims() *crossedClaims {
	return &crossedClaims{secondOut: make(chan struct{}), firstOut: make(chan struct{})}
}

func (h *crossedClaims) ID() string { return "crossed-claims" }
func (h *crossedClaims) Provides(b byte) bool {
	return b == mqtt.OnPublish || b == mqtt.OnPublished
}

func isClaim(pk packets.Packet) bool {
	return pk.TopicName == DefaultTopics.Lease() && len(pk.Payload) > 0
}

func (h *crossedClaims) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if !isClaim(pk) {
		return pk, nil
	}
	h.mu.Lock()
	hold := h.first == ""
	if hold {
		h.first = cl.ID
	}
	h.mu.Unlock()
	if hold {
		select {
		case <-h.secondOut:
		case <-time.After(4 * time.Second): // no second claim came
		}
	}
	return pk, nil
}

func (h *crossedClaims) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	if !isClaim(pk) {
		return
	}
	h.mu.Lock()
	second := h.first != "" && cl.ID != h.first && h.second == ""
	if second {
		h.second = cl.ID
	}
	first := cl.ID == h.first && h.second != ""
	h.mu.Unlock()
	switch {
	case second:
		close(h.secondOut)
		select {
		case <-h.firstOut:
		case <-time.After(4 * time.Second):
		}
		// Time for the client to take in the first claim before the
		// acknowledgement of its own.
		time.Sleep(300 * time.Millisecond)
	case first:
		select {
		case <-h.firstOut:
		default:
			close(h.firstOut)
		}
	}
}

// TestControllersCrossedClaims: two controllers claim the lease at once
// and their claims cross in the broker (crossedClaims): the broker holds
// the first's, the second receives the first's claim after its own, and
// its acknowledgement after both. Only the first takes the lease and
// acts; the devices take the deployment once.
func TestControllersCrossedClaims(t *testing.T) {
	h := newCrossedClaims()
	_, url := mochiBroker(t, &refusing{}, h)
	addr := strings.TrimPrefix(url, "tcp://")
	keys := testKeys()
	var dc simCounters
	devs := []*simDevice{startSimDevice(t, addr, 1, &dc), startSimDevice(t, addr, 2, &dc)}
	pub, err := Dial(t.Context(), ConnConfig{URLs: []string{url}, ClientID: "cli", Topics: DefaultTopics})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	def := publishGeneration(t, pub, keys, "crossed", 1)
	r := startTogether(t, url, keys, "ctl-a", "ctl-b")
	waitUntil(t, 30*time.Second, "every device converged", func() bool {
		s := pub.View().Snapshot(keys)
		return allConverged(devs, func(d *simDevice) bool {
			a := s.Devices[d.id].Assignment
			return a != nil && a.Generation == def.Generation && d.converged == a.Digest
		})
	})
	time.Sleep(time.Second)
	h.mu.Lock()
	first, second := h.first, h.second
	h.mu.Unlock()
	if second == "" {
		t.Fatalf("the claims did not cross (first %q, no second): the test injected nothing", first)
	}
	got := r.acquired()
	if len(got) != 1 || !strings.HasPrefix(got[0], first+" ") {
		t.Errorf("controllers that took the lease: %v, want only %s (whose claim the broker holds)", got, first)
		for i, l := range r.logs {
			t.Logf("%s:\n%s", r.ids[i], l)
		}
	}
	if l := pub.View().Snapshot(keys).Lease; l == nil || l.Holder != first {
		t.Errorf("lease on the broker: %+v, want held by %s", l, first)
	}
	r.stop()
	checkGivenOnce(t, devs, 1)
}
