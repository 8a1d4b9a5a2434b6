package hub

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestDeepTopicsRefused: a topic or filter of more than 200 levels is
// refused, as mosquitto refuses it (TOPIC_HIERARCHY_LIMIT), before it
// reaches the topic tree. One SUBSCRIBE of 30,000 levels took the hub
// 3.8 s and 400 MB (the tree isolates each level from the start of the
// filter: quadratic); the publish to it 5.9 s. A filter over the limit
// gets SUBACK 0x8F (the hub's answer to any filter it refuses, see
// docs/hub.md), a publish DISCONNECT 0x90 (topic name invalid); 200
// levels pass.
func TestDeepTopicsRefused(t *testing.T) {
	h := startHub(t, nil, false)
	h.addIdentity(t, IdentitySpec{Name: "tool", Kind: KindUser, Password: "s3cret"})
	m := newMosq(t, h.Ports().MQTT, "tool", "s3cret")
	run := func(bin string, args ...string) string {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		out, _ := exec.CommandContext(ctx, bin, m.args(args...)...).CombinedOutput()
		return string(out)
	}
	deep := strings.Repeat("a/", 30000)
	if out := run(m.sub, "-V", "mqttv5", "-t", deep+"#", "-d", "-E"); !strings.Contains(out, "Subscribed (mid: 1): 143") {
		t.Errorf("30,000-level filter: want SUBACK 0x8F (143): %.300s", out[max(0, len(out)-300):])
	}
	if out := run(m.sub, "-V", "mqttv5", "-t", strings.Repeat("a/", 201)+"#", "-d", "-E"); !strings.Contains(out, "Subscribed (mid: 1): 143") {
		t.Errorf("202-level filter: want SUBACK 0x8F (143): %.300s", out[max(0, len(out)-300):])
	}
	if out := run(m.sub, "-V", "mqttv5", "-t", strings.Repeat("a/", 199)+"#", "-d", "-E"); !strings.Contains(out, "Subscribed (mid: 1): 0") {
		t.Errorf("200-level filter: want it granted: %.300s", out[max(0, len(out)-300):])
	}
	if out := run(m.pub, "-V", "mqttv5", "-q", "1", "-t", deep+"x", "-m", "x", "-d"); !strings.Contains(out, "Received DISCONNECT (144)") {
		t.Errorf("publish to 30,001 levels: want DISCONNECT 0x90 (144): %.300s", out[max(0, len(out)-300):])
	}
	if out := run(m.pub, "-V", "mqttv311", "-q", "1", "-t", deep+"x", "-m", "x", "-d"); strings.Contains(out, "received PUBACK") {
		t.Errorf("publish to 30,001 levels, 3.1.1: acknowledged: %.300s", out[max(0, len(out)-300):])
	}
	if out := run(m.pub, "-V", "mqttv5", "-q", "1", "-t", strings.Repeat("a/", 199)+"x", "-m", "x", "-d"); !strings.Contains(out, "received PUBACK (Mid: 1, RC:0)") {
		t.Errorf("publish to 200 levels: want PUBACK 0: %.300s", out[max(0, len(out)-300):])
	}
}

// TestWillTopicInvalid: a CONNECT whose Will topic has a wildcard or more
// than 200 levels is refused, as mosquitto refuses it: MQTT 5 CONNACK 0x90
// (topic name invalid), MQTT 3.1.1 the connection closed without a CONNACK
// [MQTT-3.1.4-1]. The hub took it, and published the Will to "w/#" (a
// topic name clients must never get) when the connection dropped.
func TestWillTopicInvalid(t *testing.T) {
	h := startHub(t, nil, true)
	for _, v := range []byte{4, 5} {
		for _, topic := range []string{"w/#", "w/+/x", strings.Repeat("a/", 300) + "x"} {
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", h.Ports().MQTT))
			if err != nil {
				t.Fatal(err)
			}
			str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
			body := append(str("MQTT"), v, 0x06, 0, 60)
			if v == 5 {
				body = append(body, 0)
			}
			body = append(body, str("wl")...)
			if v == 5 {
				body = append(body, 0)
			}
			body = append(append(body, str(topic)...), str("bye")...)
			pk := append([]byte{0x10}, varint(len(body))...)
			c.Write(append(pk, body...))
			buf := make([]byte, 64)
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, err := c.Read(buf)
			c.Close()
			switch {
			case v == 4 && n > 0:
				t.Errorf("3.1.1, Will topic %.20q: answered % x, want the connection closed", topic, buf[:n])
			case v == 5 && (n < 4 || buf[0] != 0x20 || buf[3] != 0x90):
				t.Errorf("MQTT 5, Will topic %.20q: answered % x (%v), want CONNACK 0x90", topic, buf[:n], err)
			}
		}
	}
}

// TestDuplicatePropertyRefused: a property other than User Property and
// Subscription Identifier given twice is a Protocol Error (MQTT 5
// §2.2.2.2): a CONNECT with two Session Expiry Intervals is closed without
// a CONNACK, as mosquitto closes it; a PUBLISH with two Message Expiry
// Intervals gets a DISCONNECT (0x81, as every property the hub cannot
// read; mosquitto closes without one) and is not taken. The hub took
// either, with the last value.
func TestDuplicatePropertyRefused(t *testing.T) {
	h := startHub(t, nil, true)
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	dial := func(props []byte) (net.Conn, []byte) { return rawConnect5(t, h, "dup", props) }
	if _, got := dial([]byte{0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2}); len(got) > 0 {
		t.Errorf("CONNECT with Session Expiry Interval twice: answered % x, want the connection closed", got)
	}
	c, got := dial(nil)
	if len(got) < 4 || got[0] != 0x20 || got[3] != 0 {
		t.Fatalf("CONNECT: % x", got)
	}
	// QoS 1 PUBLISH to "d" with Message Expiry Interval twice.
	vh := append(str("d"), 0, 1)
	props := []byte{0x02, 0, 0, 0, 9, 0x02, 0, 0, 0, 9}
	vh = append(append(append(vh, varint(len(props))...), props...), 'x')
	c.Write(append(append([]byte{0x32}, varint(len(vh))...), vh...))
	buf := make([]byte, 256)
	n, _ := c.Read(buf)
	if n < 3 || buf[0] != 0xe0 || (buf[2] != 0x81 && buf[2] != 0x82) {
		t.Errorf("PUBLISH with Message Expiry Interval twice: answered % x, want DISCONNECT 0x81 or 0x82", buf[:n])
	}
}

// TestSubscribeWithoutOptionsDropsThatClientOnly: an MQTT 5 SUBSCRIBE whose
// filter has no options byte (9 bytes from any client that may connect)
// made mochi's decoder index past the packet: the panic ended the whole
// ledge (agent, pipelines, dashboard). It is a malformed packet now: that
// client gets DISCONNECT 0x81, the others carry on.
func TestSubscribeWithoutOptionsDropsThatClientOnly(t *testing.T) {
	h := startHub(t, nil, true)
	other, err := h.connect(t, "other", "", "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", h.Ports().MQTT))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	body := append(append(str("MQTT"), 5, 0x02, 0, 60, 0), str("noopt")...)
	c.Write(append(append([]byte{0x10}, varint(len(body))...), body...))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 256)
	if n, err := c.Read(buf); err != nil || buf[0] != 0x20 {
		t.Fatalf("CONNACK: % x %v", buf[:n], err)
	}
	sub := append([]byte{0, 1, 0}, str("a")...) // no options byte
	c.Write(append([]byte{0x82, byte(len(sub))}, sub...))
	n, _ := c.Read(buf)
	if n < 3 || buf[0] != 0xe0 || buf[2] != 0x81 {
		t.Errorf("got % x, want DISCONNECT 0x81", buf[:n])
	}
	if tok := other.Subscribe("still/here", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Errorf("another client after the malformed SUBSCRIBE: %v", tok.Error())
	}
}

// TestProtocolErrorsInOptions: what MQTT 5 calls a Protocol Error or a
// malformed packet is refused, as mosquitto refuses it, not taken: a
// CONNECT with Receive Maximum 0 or Maximum Packet Size 0 (§3.1.2.11.3-4)
// is closed without a CONNACK; a SUBSCRIBE with reserved option bits set
// [MQTT-3.8.3-5] or Retain Handling 3 (§3.8.3.1) gets a DISCONNECT. The
// hub granted them (Receive Maximum 0 even lifted the client's flow
// control).
func TestProtocolErrorsInOptions(t *testing.T) {
	h := startHub(t, nil, true)
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	dial := func(props []byte) (net.Conn, []byte) { return rawConnect5(t, h, "opts", props) }
	for name, props := range map[string][]byte{
		"Receive Maximum 0":     {0x21, 0, 0},
		"Maximum Packet Size 0": {0x27, 0, 0, 0, 0},
	} {
		if _, got := dial(props); len(got) > 0 {
			t.Errorf("CONNECT with %s: answered % x, want the connection closed", name, got)
		}
	}
	for name, opt := range map[string]byte{"reserved bits": 0xc1, "Retain Handling 3": 0x31} {
		c, got := dial(nil)
		if len(got) < 4 || got[0] != 0x20 || got[3] != 0 {
			t.Fatalf("CONNECT: % x", got)
		}
		sub := append(append([]byte{0, 1, 0}, str("a")...), opt)
		c.Write(append([]byte{0x82, byte(len(sub))}, sub...))
		buf := make([]byte, 256)
		n, _ := c.Read(buf)
		if n < 3 || buf[0] != 0xe0 || (buf[2] != 0x81 && buf[2] != 0x82) {
			t.Errorf("SUBSCRIBE with %s: answered % x, want DISCONNECT 0x81 or 0x82", name, buf[:n])
		}
	}
}

// rawConnect5 sends an MQTT 5 CONNECT (clean start, keep-alive 60) with
// props as its properties, byte for byte, and returns the connection and
// what the hub answered first (nothing when it closed without a word).
func rawConnect5(t *testing.T, h *testHub, clientID string, props []byte) (net.Conn, []byte) {
	t.Helper()
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", h.Ports().MQTT))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	body := append(str("MQTT"), 5, 0x02, 0, 60)
	body = append(append(body, varint(len(props))...), props...)
	body = append(body, str(clientID)...)
	c.Write(append(append([]byte{0x10}, varint(len(body))...), body...))
	buf := make([]byte, 256)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, _ := c.Read(buf)
	return c, buf[:n]
}
