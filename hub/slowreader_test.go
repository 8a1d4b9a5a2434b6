package hub

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startSubscribed starts mosquitto_sub with args (and -d) and returns once
// its SUBACK arrived, with the process and a channel of its stdout lines
// that are not -d's.
func startSubscribed(t *testing.T, m *mosq, args ...string) (*exec.Cmd, chan string) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	// stdbuf: mosquitto_sub's stdout is a pipe, which stdio buffers.
	c := exec.CommandContext(ctx, "stdbuf", append([]string{"-oL", m.sub}, m.args(append(args, "-d")...)...)...)
	out, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Process.Signal(syscall.SIGCONT); cancel(); c.Wait() })
	subscribed := make(chan struct{})
	lines := make(chan string, 100000)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		once := false
		for sc.Scan() {
			l := sc.Text()
			switch {
			case strings.HasPrefix(l, "Subscribed") && !once:
				once = true
				close(subscribed)
			case strings.HasPrefix(l, "Client "):
			default:
				lines <- l
			}
		}
		close(lines)
	}()
	select {
	case <-subscribed:
	case <-time.After(30 * time.Second):
		t.Fatalf("mosquitto_sub %v: no SUBACK", args)
	}
	return c, lines
}

// TestSlowReaderStallsNoOne: a subscriber with a QoS 1 subscription that
// stops reading (mosquitto_sub stopped with SIGSTOP) does not stall the
// publisher or the other subscribers: mosquitto_pub sends 3,000 QoS 1
// messages of 60 KB and a reading mosquitto_sub gets all of them, as with
// mosquitto. The hub stopped reading the publisher after some 50
// messages, for good.
func TestSlowReaderStallsNoOne(t *testing.T) {
	h := startHub(t, nil, false)
	h.addIdentity(t, IdentitySpec{Name: "tool", Kind: KindUser, Password: "s3cret"})
	m := newMosq(t, h.Ports().MQTT, "tool", "s3cret")
	for _, qos := range []string{"1", "2"} {
		t.Run("qos"+qos, func(t *testing.T) {
			m.t = t
			topic := "slow/" + qos
			slow, _ := startSubscribed(t, m, "-i", "stopped-"+qos, "-q", qos, "-t", topic)
			if err := slow.Process.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			_, lines := startSubscribed(t, m, "-i", "reading-"+qos, "-q", "0", "-t", topic)
			flood(t, m, "pub-"+qos, qos, topic, 3000, lines)
		})
	}
}

// TestSlowReadersShareMessages: ten subscribers that stop reading each
// hold up to 1,024 messages for themselves (hub.maxPendingWrites, the
// session's inflight limit), but one copy of each message's payload is
// kept for all of them, as mosquitto keeps one: 3,000 messages of 60 KB
// left the hub holding 1.6 GB (a copy per subscriber), mosquitto 140 MB.
// Live heap after a GC, with the stopped subscribers still holding their
// queues: well under what per-subscriber copies take (10 x 1,024 x 60 KB
// = 600 MB).
func TestSlowReadersShareMessages(t *testing.T) {
	h := startHub(t, nil, false)
	h.addIdentity(t, IdentitySpec{Name: "tool", Kind: KindUser, Password: "s3cret"})
	m := newMosq(t, h.Ports().MQTT, "tool", "s3cret")
	for i := range 10 {
		slow, _ := startSubscribed(t, m, "-i", fmt.Sprintf("stopped-%d", i), "-q", "1", "-t", "share/t")
		if err := slow.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	_, lines := startSubscribed(t, m, "-i", "reading", "-q", "0", "-t", "share/t")
	flood(t, m, "pub", "1", "share/t", 3000, lines)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("live heap with 10 stopped subscribers: %d MB", ms.HeapAlloc>>20)
	if ms.HeapAlloc > 250<<20 {
		t.Errorf("live heap %d MB with 10 stopped subscribers holding the same messages, want one copy of each (under 250 MB)", ms.HeapAlloc>>20)
	}
}

// TestTakeoverOfStalledClient: a client whose connection is stuck (it
// stopped reading with its socket full) is taken over by a new connection
// with its client id at once, as mosquitto does: the hub wrote the old
// connection its DISCONNECT and waited for the write, so the new CONNECT
// got its CONNACK only when the old keep-alive ran out (90 s with
// mosquitto_sub's 60 s; mosquitto_sub gave up and reconnected at 60 s).
func TestTakeoverOfStalledClient(t *testing.T) {
	h := startHub(t, nil, false)
	h.addIdentity(t, IdentitySpec{Name: "tool", Kind: KindUser, Password: "s3cret"})
	m := newMosq(t, h.Ports().MQTT, "tool", "s3cret")
	old, _ := startSubscribed(t, m, "-i", "taken", "-q", "1", "-t", "take/t", "-k", "60")
	if err := old.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	payload := strings.Repeat("x", 60000)
	var b strings.Builder
	for range 2000 {
		b.WriteString(payload + "\n")
	}
	m.run(m.pub, b.String(), "-q", "0", "-t", "take/t", "-l")
	// Its socket and its write queue are full: the hub's write to it waits.
	waitFor(t, "messages dropped for the stopped client", func() bool { return h.Stats().Drops[dropSlowClient] > 0 })
	// startSubscribed gives it 30 s for its SUBACK.
	_, lines := startSubscribed(t, m, "-i", "taken", "-q", "1", "-t", "take/t")
	m.run(m.pub, "", "-q", "1", "-t", "take/t", "-m", "after")
	select {
	case l := <-lines:
		if l != "after" {
			t.Fatalf("the new connection got %.20q, want after", l)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the new connection got nothing")
	}
}

// flood publishes n messages of 60 KB with mosquitto_pub, then "end" (every
// 2 s, until it arrives), and reads lines until "end": they must come in
// publish order; under load some may be dropped for the reader (counted
// as slow_client or session_quota, as mosquitto drops past its queue). A
// publisher stalled by a subscriber never gets to "end": after 60 s
// without a line the test fails with the goroutines.
func flood(t *testing.T, m *mosq, id, qos, topic string, n int, lines chan string) {
	t.Helper()
	payload := strings.Repeat("x", 60000)
	ctx, cancel := context.WithTimeout(t.Context(), 180*time.Second)
	defer cancel()
	pub := exec.CommandContext(ctx, m.pub, m.args("-i", id, "-q", qos, "-t", topic, "-l")...)
	stdin, err := pub.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Start(); err != nil {
		t.Fatal(err)
	}
	ended := make(chan struct{})
	go func() {
		for i := 1; i <= n; i++ {
			if _, err := fmt.Fprintf(stdin, "%d%s\n", i, payload); err != nil {
				break
			}
		}
		stdin.Close()
		pub.Wait()
		for {
			exec.CommandContext(ctx, m.pub, m.args("-q", "1", "-t", topic, "-m", "end")...).Run()
			select {
			case <-ended:
				return
			case <-ctx.Done():
				return
			case <-time.After(2 * time.Second):
			}
		}
	}()
	defer close(ended)
	last, got := 0, 0
	for {
		select {
		case l := <-lines:
			if l == "end" {
				t.Logf("the reading subscriber got %d of %d messages", got, n)
				return
			}
			var k int
			fmt.Sscanf(l, "%d", &k)
			if k <= last {
				t.Fatalf("message %d after %d", k, last)
			}
			last = k
			got++
		case <-time.After(60 * time.Second):
			var buf strings.Builder
			pprof.Lookup("goroutine").WriteTo(&buf, 1)
			t.Fatalf("the reading subscriber got %d of %d messages, then nothing for 60 s; goroutines:\n%s", got, n, buf.String())
		}
	}
}
