package hub

import (
	"context"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	pahov5 "github.com/eclipse/paho.golang/paho"

	"ledge/internal/testenv"
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

// TestPubrelsResentWhateverTheQuota: QoS 2 deliveries a client PUBREC'd
// before it went away get their PUBRELs again when it comes back, all of
// them, even with a Receive Maximum smaller than their number (Receive
// Maximum limits PUBLISH packets; these flows only end with the PUBCOMP).
func TestPubrelsResentWhateverTheQuota(t *testing.T) {
	h := startHub(t, nil, true)
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	read := func(c net.Conn) (byte, []byte) {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		h := make([]byte, 1)
		if _, err := io.ReadFull(c, h); err != nil {
			t.Fatal(err)
		}
		n, mul := 0, 1
		for {
			b := make([]byte, 1)
			if _, err := io.ReadFull(c, b); err != nil {
				t.Fatal(err)
			}
			n += int(b[0]&127) * mul
			mul *= 128
			if b[0]&128 == 0 {
				break
			}
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(c, body); err != nil {
			t.Fatal(err)
		}
		return h[0], body
	}
	dial := func(receiveMax byte) net.Conn {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", h.Ports().MQTT))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		props := []byte{0x11, 0, 0, 1, 0, 0x21, 0, receiveMax}
		body := append(str("MQTT"), 5, 0, 0, 60)
		body = append(append(append(body, varint(len(props))...), props...), str("rel")...)
		c.Write(append(append([]byte{0x10}, varint(len(body))...), body...))
		if typ, _ := read(c); typ != 0x20 {
			t.Fatalf("no CONNACK: %x", typ)
		}
		return c
	}
	c := dial(5)
	sub := append([]byte{0, 1, 0}, str("rel/t")...)
	sub = append(sub, 2)
	c.Write(append(append([]byte{0x82}, varint(len(sub))...), sub...))
	if typ, _ := read(c); typ != 0x90 {
		t.Fatalf("no SUBACK: %x", typ)
	}
	p, err := h.connect(t, "rel-pub", "", "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		p.Publish("rel/t", 2, false, fmt.Sprint(i)).Wait()
	}
	for range 5 {
		typ, body := read(c)
		if typ&0xf0 != 0x30 {
			t.Fatalf("want a PUBLISH, got %x", typ)
		}
		tl := int(body[0])<<8 | int(body[1])
		c.Write([]byte{0x50, 2, body[2+tl], body[3+tl]}) // PUBREC
	}
	for range 5 {
		if typ, _ := read(c); typ != 0x62 {
			t.Fatalf("want a PUBREL, got %x", typ)
		}
	}
	c.Close() // without PUBCOMP
	waitFor(t, "the session away", func() bool { cl, ok := h.srv.Clients.Get("rel"); return ok && cl.Closed() })
	c = dial(2)
	for i := range 5 {
		if typ, _ := read(c); typ != 0x62 {
			t.Fatalf("PUBREL %d of 5 after the reconnect: got %x", i+1, typ)
		}
	}
}

// TestRestoredSessionDup: after a restart of the broker, a persistent
// session's messages come back with DUP set only on those sent before,
// from the hub as from mosquitto (persistence on). paho.golang (MQTT 5,
// Receive Maximum 2, never acknowledging) gets m1 and m2; m3 and m4 wait
// for its quota and m5 is queued once it is away; the broker restarts;
// mosquitto_sub resumes the session: m1 and m2 with DUP 1 (a
// re-delivery), m3..m5 with DUP 0 (never sent). The hub sent every
// restored message with DUP 1: its store did not keep which ones were
// never sent.
func TestRestoredSessionDup(t *testing.T) {
	t.Run("mosquitto", func(t *testing.T) {
		mq := newMosquitto(t, "")
		mq.start()
		restoredSessionDup(t, mq.port, "", "", nil, func() int { mq.stop(); mq.start(); return mq.port })
	})
	t.Run("ledge", func(t *testing.T) {
		db := testenv.DB(t)
		dir := t.TempDir()
		h := runHubOn(t, db, dir, nil, false)
		h.addIdentity(t, IdentitySpec{Name: "tool", Kind: KindUser, Password: "s3cret"})
		away := func() {
			waitFor(t, "the session away", func() bool { cl, ok := h.srv.Clients.Get("dup"); return ok && cl.Closed() })
		}
		restoredSessionDup(t, h.Ports().MQTT, "tool", "s3cret", away, func() int {
			h.stop()
			return runHubOn(t, db, dir, nil, false).Ports().MQTT
		})
	})
}

func restoredSessionDup(t *testing.T, port int, user, pass string, away func(), restart func() int) {
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 10)
	c := pahov5.NewClient(pahov5.ClientConfig{Conn: conn, EnableManualAcknowledgment: true, OnClientError: func(error) {},
		OnPublishReceived: []func(pahov5.PublishReceived) (bool, error){func(p pahov5.PublishReceived) (bool, error) {
			got <- string(p.Packet.Payload)
			return true, nil
		}}})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	expiry, rm := uint32(300), uint16(2)
	if _, err := c.Connect(ctx, &pahov5.Connect{ClientID: "dup", KeepAlive: 30, UsernameFlag: user != "", Username: user,
		PasswordFlag: pass != "", Password: []byte(pass),
		Properties: &pahov5.ConnectProperties{SessionExpiryInterval: &expiry, ReceiveMaximum: &rm}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Subscribe(ctx, &pahov5.Subscribe{Subscriptions: []pahov5.SubscribeOptions{{Topic: "dup/t", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	m := newMosq(t, port, user, pass)
	m.run(m.pub, "m1\nm2\nm3\nm4\n", "-V", "mqttv5", "-q", "1", "-t", "dup/t", "-l")
	for _, want := range []string{"m1", "m2"} {
		select {
		case g := <-got:
			if g != want {
				t.Fatalf("paho got %q, want %q", g, want)
			}
		case <-ctx.Done():
			t.Fatalf("paho got no %s", want)
		}
	}
	conn.Close() // gone without acknowledging
	if away != nil {
		away()
	}
	m.run(m.pub, "", "-V", "mqttv5", "-q", "1", "-t", "dup/t", "-m", "m5")
	m.port = restart()
	out := m.run(m.sub, "", "-V", "mqttv5", "-x", "300", "-c", "-i", "dup", "-q", "1", "-t", "dup/t", "-C", "5", "-W", "15", "-d")
	var flags []string
	for _, l := range strings.Split(out, "\n") {
		if i := strings.Index(l, "received PUBLISH ("); i >= 0 {
			flags = append(flags, l[i+len("received PUBLISH ("):][:2])
		}
	}
	if want := []string{"d1", "d1", "d0", "d0", "d0"}; fmt.Sprint(flags) != fmt.Sprint(want) {
		t.Errorf("DUP of m1..m5 after the restart: %v, want %v\n%s", flags, want, out)
	}
	checkInOrder(t, strings.Join(regexp.MustCompile(`(?m)^m\d+$`).FindAllString(out, -1), "\n"), 5)
}
