package hub

import (
	"fmt"
	"log/slog"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"ledge/internal/testenv"
)

// startHubWithLog is startHub with the hub's INFO log kept for the test.
func startHubWithLog(t *testing.T, mutate func(*Config)) (*testHub, *lockedBuffer) {
	t.Helper()
	logs := &lockedBuffer{}
	h := startHubLogged(t, testDevice, mutate, false, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	return h, logs
}

// TestDroppedMessagesLoggedOnce: a persistent session away whose queue is
// full (1024 messages) loses what comes next, and a connected client that
// does not read loses what does not fit its write queue
// (hub.maxPendingWrites): each is counted, and said once in the log naming
// the client (mosquitto: "Outgoing messages are being dropped for client
// X"), not once per message and not never.
func TestDroppedMessagesLoggedOnce(t *testing.T) {
	h, logs := startHubWithLog(t, func(c *Config) { c.MaxPendingWrites = 16 })
	h.addIdentity(t, IdentitySpec{Name: "tool", Kind: KindUser, Password: "s3cret"})
	m := newMosq(t, h.Ports().MQTT, "tool", "s3cret")
	m.run(m.sub, "", "-c", "-i", "away-1", "-q", "1", "-t", "full/t", "-E")
	var b strings.Builder
	for i := 1; i <= 1100; i++ {
		fmt.Fprintf(&b, "m%d\n", i)
	}
	m.run(m.pub, b.String(), "-q", "1", "-t", "full/t", "-l")
	waitFor(t, "76 drops counted", func() bool { return h.Stats().Drops[dropSessionQuota] == 76 })
	m.run(m.pub, "m1101\nm1102\n", "-q", "1", "-t", "full/t", "-l")
	waitFor(t, "78 drops counted", func() bool { return h.Stats().Drops[dropSessionQuota] == 78 })
	if n := strings.Count(logs.String(), "away-1"); n != 1 {
		t.Errorf("the full queue of away-1 is in the log %d times, want once:\n%s", n, logs)
	}

	// A 3.1.1 client that subscribes and never reads: QoS 0 messages pile
	// up in its socket, then in its write queue, then are dropped.
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", h.Ports().MQTT))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	connect := append([]byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0xc2, 0, 60, 0, 4}, "slow"...)
	connect = append(append(connect, 0, 4), "tool"...)
	connect = append(append(connect, 0, 6), "s3cret"...)
	sub := append([]byte{0, 1, 0, 6}, "slow/t"...)
	sub = append(sub, 0)
	c.Write(append(append([]byte{0x10, byte(len(connect))}, connect...), append([]byte{0x82, byte(len(sub))}, sub...)...))
	buf := make([]byte, 9) // CONNACK and SUBACK
	if _, err := readFull(c, buf); err != nil {
		t.Fatal(err)
	}
	p, err := h.connect(t, "pub-slow", "tool", "s3cret", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	payload := strings.Repeat("x", 64*1024)
	waitFor(t, "drops for the slow reader", func() bool {
		for range 50 {
			p.Publish("slow/t", 0, false, payload).Wait()
		}
		return h.Stats().Drops[dropSlowClient] > 50
	})
	if n := strings.Count(logs.String(), "client=slow "); n != 1 {
		t.Errorf("the slow reader's drops are in the log %d times, want once:\n%s", n, logs)
	}
}

func readFull(c net.Conn, b []byte) (int, error) {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n := 0
	for n < len(b) {
		k, err := c.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// TestRefusalsLoggedOnce: a device that publishes what the hub does not
// keep (here a topic it does not serve; a full disk takes the same way)
// over MQTT 3.1.1 is disconnected each time, and reconnects and tries
// again, as devices do: the log says so once (INFO, with the client, the
// reason and the detail), not once per attempt, which flooded the log with
// 1500 lines in ten minutes of a full disk.
func TestRefusalsLoggedOnce(t *testing.T) {
	logs := &lockedBuffer{}
	h := startHubLogged(t, testDevice, nil, true, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	pub := testenv.Command(t, "mosquitto_pub", "mosquitto-clients")
	for range 10 {
		// Refused: mosquitto_pub exits non-zero, as it should.
		exec.Command(pub, "-h", "127.0.0.1", "-p", fmt.Sprint(h.Ports().MQTT), "-V", "mqttv311", "-i", "plc-7", "-q", "1",
			"-t", "devices/plc-7/messages/nowhere", "-m", "21.5").Run()
	}
	waitFor(t, "10 refusals counted", func() bool { return h.Stats().Drops[dropMalformed] >= 10 })
	if n := strings.Count(logs.String(), "publish refused"); n != 1 || !strings.Contains(logs.String(), "client=plc-7") {
		t.Errorf("10 refusals of one client are in the log %d times, want once:\n%s", n, logs)
	}
}
