package hub

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"ledge/internal/testenv"
)

// willBroker is a broker a test can stop (as a service stop does: SIGTERM,
// a cancelled Run) and start again on the same data.
type willBroker interface {
	port() int
	stop()
	start()
}

type mosquittoWillBroker struct{ m *mosquitto }

func (b mosquittoWillBroker) port() int { return b.m.port }
func (b mosquittoWillBroker) stop()     { b.m.stop() }
func (b mosquittoWillBroker) start()    { b.m.start() }

type ledgeWillBroker struct {
	h   *hubRun
	run func() *hubRun
}

func (b *ledgeWillBroker) port() int { return b.h.Ports().MQTT }
func (b *ledgeWillBroker) stop()     { b.h.stop() }
func (b *ledgeWillBroker) start()    { b.h = b.run() }

// TestWillDelayAcrossRestart: MQTT 5 clients with a Will Delay Interval
// (30 s) and a session expiry, as mosquitto_sub sets them, when the broker
// is stopped and started again before the delay passes. mosquitto 2.0
// (persistence on) publishes every Will it holds when it stops: the Will
// of a client that dropped its connection and waits for its delay, and
// the Will of a client still connected; both are queued for a persistent
// session and delivered when it returns after the restart. A client that
// sent DISCONNECT has no Will. The hub must do the same (it kept the
// delayed Will in memory only, and lost both).
func TestWillDelayAcrossRestart(t *testing.T) {
	t.Run("mosquitto", func(t *testing.T) {
		m := newMosquitto(t, "")
		m.start()
		willDelayAcrossRestart(t, mosquittoWillBroker{m})
	})
	t.Run("ledge", func(t *testing.T) {
		db := testenv.DB(t)
		dir := t.TempDir()
		run := func() *hubRun { return runHubOn(t, db, dir, nil, true) }
		willDelayAcrossRestart(t, &ledgeWillBroker{h: run(), run: run})
	})
}

func willDelayAcrossRestart(t *testing.T, b willBroker) {
	m := newMosq(t, b.port(), "", "")
	obs := []string{"-V", "mqttv5", "-x", "3600", "-c", "-q", "1", "-i", "will-obs", "-t", "will/#", "-v"}
	m.run(m.sub, "", append(obs, "-E")...) // a persistent session that is away

	willer := func(id string, extra ...string) []string {
		return append([]string{"-h", "127.0.0.1", "-p", fmt.Sprint(b.port()), "-V", "mqttv5", "-i", id, "-x", "600",
			"-t", "idle/" + id, "--will-topic", "will/" + id, "--will-payload", "gone", "--will-qos", "1",
			"-D", "will", "will-delay-interval", "30"}, extra...)
	}
	// Sends DISCONNECT (normal): its Will is discarded.
	m.run(m.sub, "", willer("clean", "-E")[4:]...)
	// Its connection drops (kill -9 of the client): the Will waits 30 s.
	ctx, kill := context.WithCancel(t.Context())
	away := testenv.MosquittoSub(t, ctx, willer("away")...)
	kill()
	away.Wait()
	// Still connected when the broker stops.
	ctx, kill = context.WithCancel(t.Context())
	defer kill()
	connected := testenv.MosquittoSub(t, ctx, willer("connected")...)

	b.stop()
	kill() // before mosquitto_sub reconnects to the restarted broker
	connected.Wait()
	b.start()

	// A message published after the restart comes after whatever the
	// stop queued for the session.
	m.port = b.port()
	m.run(m.pub, "", "-V", "mqttv5", "-q", "1", "-t", "will/end", "-m", "end")
	out := m.run(m.sub, "", append(obs, "-C", "3", "-W", "15")...)
	got := strings.Split(strings.TrimSpace(out), "\n")
	want := []string{"will/away gone", "will/connected gone", "will/end end"}
	if len(got) == 3 {
		slices.Sort(got[:2]) // the two Wills in either order
	}
	if !slices.Equal(got, want) {
		t.Errorf("after the restart the session got %q, want %q (both Wills sent at the stop, none for the clean DISCONNECT)", got, want)
	}
}
