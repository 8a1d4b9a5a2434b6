package hub

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestPersistentSessionQoS2Mosquitto: more QoS 1 and 2 messages queued for
// an MQTT 5 session away than its Receive Maximum (mosquitto_sub: 20) come
// back at most 20 in flight at a time, each once, in publish order, with
// DUP 0 (they were never sent before), as mosquitto delivers them. The hub
// sent all of them at once at the reconnect (libmosquitto: "A network
// protocol error occurred", nothing delivered), and the ones over the
// quota a second time once acks came in.
func TestPersistentSessionQoS2Mosquitto(t *testing.T) {
	h := startHub(t, nil, false)
	h.addIdentity(t, IdentitySpec{Name: "tool", Kind: KindUser, Password: "s3cret"})
	m := newMosq(t, h.Ports().MQTT, "tool", "s3cret")
	for _, qos := range []string{"1", "2"} {
		t.Run("qos"+qos, func(t *testing.T) {
			m.t = t
			id := "q2-" + qos
			topic := "resume/" + id
			subArgs := []string{"-V", "mqttv5", "-x", "300", "-c", "-i", id, "-q", "2", "-t", topic}
			m.run(m.sub, "", append(subArgs, "-E")...) // subscribe, leave
			const n = 100
			var b strings.Builder
			for i := 1; i <= n; i++ {
				fmt.Fprintf(&b, "m%d\n", i)
			}
			m.run(m.pub, b.String(), "-V", "mqttv5", "-q", qos, "-t", topic, "-l")
			out := m.run(m.sub, "", append(subArgs, "-C", fmt.Sprint(n), "-W", "20", "-d")...)
			var msgs []string
			for _, l := range strings.Split(out, "\n") {
				if strings.Contains(l, "received PUBLISH") && !strings.Contains(l, "(d0,") {
					t.Errorf("a queued message never sent before came with DUP set: %s", l)
				}
				if strings.HasPrefix(l, "m") {
					msgs = append(msgs, l)
				}
			}
			checkInOrder(t, strings.Join(msgs, "\n"), n)
		})
	}
}

// TestQueuedMessageExpiry: messages with a Message Expiry Interval queued
// for a session away, more of them than its Receive Maximum, are not
// delivered once expired (mosquitto delivers none of them); a message
// without an expiry published after them still is.
func TestQueuedMessageExpiry(t *testing.T) {
	h := startHub(t, nil, false)
	h.addIdentity(t, IdentitySpec{Name: "tool", Kind: KindUser, Password: "s3cret"})
	m := newMosq(t, h.Ports().MQTT, "tool", "s3cret")
	subArgs := []string{"-V", "mqttv5", "-x", "300", "-c", "-i", "exp", "-q", "1", "-t", "exp/t"}
	m.run(m.sub, "", append(subArgs, "-E")...)
	var b strings.Builder
	for i := 1; i <= 30; i++ {
		fmt.Fprintf(&b, "old%d\n", i)
	}
	m.run(m.pub, b.String(), "-V", "mqttv5", "-q", "1", "-t", "exp/t", "-l", "-D", "publish", "message-expiry-interval", "1")
	// Expired once the hub's clock has moved 2 whole seconds past them.
	start := time.Now().Unix()
	waitFor(t, "2 s to pass", func() bool { return time.Now().Unix() >= start+2 })
	m.run(m.pub, "", "-V", "mqttv5", "-q", "1", "-t", "exp/t", "-m", "new")
	out := m.run(m.sub, "", append(subArgs, "-C", "1", "-W", "15")...)
	if strings.TrimSpace(out) != "new" {
		t.Fatalf("got %q, want only the message without an expiry", out)
	}
}
