package hub

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"testing"
	"time"

	pahov5 "github.com/eclipse/paho.golang/paho"
	paho "github.com/eclipse/paho.mqtt.golang"
)

// The tests in this file come from running the Eclipse Paho MQTT
// interoperability suite (paho.mqtt.testing, interoperability/client_test.py
// and client_test5.py) against the hub and against mosquitto, and from
// following the paths its tests take (a CONNECT with a wrong protocol name,
// Wills) to the answers the hub gave. Each runs the same bytes against
// mosquitto 2.0 and the hub and wants the answer the spec asks for.

// brokers are the hub (dev: anonymous loopback clients) and mosquitto
// (allow_anonymous), each a plain TCP port on loopback.
func interopBrokers(t *testing.T) map[string]int {
	t.Helper()
	h := startHub(t, nil, true)
	m := newMosquitto(t, "")
	m.start()
	return map[string]int{"hub": h.Ports().MQTT, "mosquitto": m.port}
}

// connect311 is an MQTT 3.1.1 CONNECT: flags as given, then the client
// id and the payload fields after it, each a two-byte length and its bytes.
func connect311(name string, level, flags byte, cid string, fields ...string) []byte {
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	vh := append(str(name), level, flags, 0, 60)
	vh = append(vh, str(cid)...)
	for _, f := range fields {
		vh = append(vh, str(f)...)
	}
	return append(append([]byte{0x10}, varint(len(vh))...), vh...)
}

// nextMessage is the next message, or the test fails after 10 s.
func nextMessage(t *testing.T, ch <-chan paho.Message) paho.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message in 10 s")
		return nil
	}
}

// TestConnectEmptyWillAndPassword: a Will Message and a Password may be
// zero bytes long (MQTT 3.1.1 §3.1.3.4 and §3.1.3.5: "zero or more bytes",
// "0 to 65535 bytes"; MQTT 5 §3.1.3.4-5: Binary Data). A device's retained
// Will with an empty payload is how it clears its retained "online"
// status when it drops off the network. The hub refused both CONNECTs as
// a protocol error (MQTT 5 CONNACK 0x82, MQTT 3.1.1 return code 130, which
// 3.1.1 does not have, and which paho.mqtt.golang takes for success);
// mosquitto accepts them. Now the Will is kept and published, and an
// empty password goes to authentication like any other.
func TestConnectEmptyWillAndPassword(t *testing.T) {
	for name, port := range interopBrokers(t) {
		t.Run(name, func(t *testing.T) {
			broker := fmt.Sprintf("tcp://127.0.0.1:%d", port)
			status := "status/" + name + "-dev"

			// A watcher, and the device's "online" status retained.
			got := make(chan paho.Message, 10)
			watcher := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID("watcher-" + name).
				SetAutoReconnect(false).SetOrderMatters(true))
			mustOK(t, watcher.Connect())
			t.Cleanup(func() { watcher.Disconnect(50) })
			mustOK(t, watcher.Publish(status, 1, true, "online"))
			mustOK(t, watcher.Subscribe(status, 1, func(_ paho.Client, m paho.Message) { got <- m }))
			if m := nextMessage(t, got); string(m.Payload()) != "online" || !m.Retained() {
				t.Fatalf("retained status: %q retained=%v", m.Payload(), m.Retained())
			}

			// paho.mqtt.golang (3.1.1), its Will an empty retained message.
			var conn net.Conn
			o := paho.NewClientOptions().AddBroker(broker).SetClientID("device-"+name).
				SetAutoReconnect(false).SetBinaryWill(status, []byte{}, 1, true).
				SetCustomOpenConnectionFn(func(u *url.URL, _ paho.ClientOptions) (net.Conn, error) {
					c, err := net.Dial("tcp", u.Host)
					conn = c
					return c, err
				})
			device := paho.NewClient(o)
			if tok := device.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("3.1.1 CONNECT with an empty Will payload refused: %v", tok.Error())
			}
			conn.Close() // the device drops off
			if m := nextMessage(t, got); len(m.Payload()) != 0 {
				t.Errorf("Will: %q, want an empty payload", m.Payload())
			}
			// The retained status is gone: a new subscriber gets only the
			// marker published after its SUBACK.
			late := make(chan paho.Message, 10)
			sub := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID("late-" + name).
				SetAutoReconnect(false).SetOrderMatters(true))
			mustOK(t, sub.Connect())
			t.Cleanup(func() { sub.Disconnect(50) })
			mustOK(t, sub.Subscribe("status/#", 1, func(_ paho.Client, m paho.Message) { late <- m }))
			mustOK(t, watcher.Publish("status/marker-"+name, 1, false, "marker"))
			if m := nextMessage(t, late); m.Topic() != "status/marker-"+name {
				t.Errorf("after the empty Will: %s %q retained=%v, want the retained status cleared", m.Topic(), m.Payload(), m.Retained())
			}

			// paho.golang (MQTT 5) with an empty Will payload.
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				t.Fatal(err)
			}
			cl := pahov5.NewClient(pahov5.ClientConfig{Conn: c})
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			if ca, err := cl.Connect(ctx, &pahov5.Connect{ClientID: "will5-" + name, CleanStart: true, KeepAlive: 30,
				WillMessage: &pahov5.WillMessage{Topic: status, QoS: 1, Retain: true, Payload: []byte{}}}); err != nil {
				t.Errorf("MQTT 5 CONNECT with an empty Will payload: %v (%+v)", err, ca)
			} else {
				cl.Disconnect(&pahov5.Disconnect{})
			}

			// A user name with an empty password is a question for
			// authentication, not a malformed CONNECT: mosquitto
			// (allow_anonymous, no password file) lets it in; the hub
			// knows no user "someone" and says so, as for any wrong
			// password (MQTT 5 0x86; 3.1.1 return code 5, as mosquitto
			// answers wrong credentials).
			want5, want311 := byte(0), byte(0)
			if name == "hub" {
				want5, want311 = 0x86, 5
			}
			c, err = net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				t.Fatal(err)
			}
			cl = pahov5.NewClient(pahov5.ClientConfig{Conn: c})
			ca, err := cl.Connect(ctx, &pahov5.Connect{ClientID: "pass5-" + name, CleanStart: true, KeepAlive: 30,
				UsernameFlag: true, Username: "someone", PasswordFlag: true, Password: []byte{}})
			if ca == nil || ca.ReasonCode != want5 {
				t.Errorf("MQTT 5 CONNECT with an empty password: %v (%+v), want reason 0x%02x", err, ca, want5)
			}
			if err == nil {
				cl.Disconnect(&pahov5.Disconnect{})
			}
			c, err = net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			r := &rawConn{c}
			r.write(t, connect311("MQTT", 4, 0xc2, "pass311-"+name, "someone", ""))
			if ack := r.read(t); !bytes.Equal(ack, []byte{0x20, 2, 0, want311}) {
				t.Errorf("3.1.1 CONNECT with an empty password: CONNACK % x, want 20 02 00 %02x", ack, want311)
			}
		})
	}
}

// TestMalformedConnect311NoConnack: an MQTT 3.1.1 CONNECT that does not
// conform is answered by closing the connection without a CONNACK
// [MQTT-3.1.4-1]; MQTT 3.1.1 has no return code for it (its codes are 0
// to 5 [MQTT-3.2.2-6], the rest reserved). The hub answered a wrong
// protocol name (the Paho suite's "hj"), a reserved flag bit, Will QoS 3
// and a Will Retain without a Will with CONNACK return code 130 or 129;
// mosquitto closes the connection.
func TestMalformedConnect311NoConnack(t *testing.T) {
	cases := map[string][]byte{
		"protocol name hj":           connect311("hj", 4, 0x02, "bad-name"),
		"reserved flag bit":          connect311("MQTT", 4, 0x03, "bad-reserved"),
		"Will QoS 3":                 connect311("MQTT", 4, 0x02|0x04|0x18, "bad-willqos", "will/t", "w"),
		"Will Retain without a Will": connect311("MQTT", 4, 0x02|0x20, "bad-willretain"),
	}
	for broker, port := range interopBrokers(t) {
		for name, pk := range cases {
			t.Run(broker+"/"+name, func(t *testing.T) {
				c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if _, err := c.Write(pk); err != nil {
					t.Fatal(err)
				}
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				b, err := io.ReadAll(c)
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatalf("connection still open after 10 s (read % x)", b)
				}
				if len(b) > 0 {
					t.Errorf("answered % x, want the connection closed without a CONNACK", b)
				}
			})
		}
	}
}

// TestSubscriptionIdentifierProtocolErrors: a SUBSCRIBE's Subscription
// Identifier is 1 to 268,435,455 and given at most once: "It is a Protocol
// Error if the Subscription Identifier has a value of 0", "It is a
// Protocol Error to include the Subscription Identifier more than once"
// (MQTT 5 §3.8.2.1.2). The hub granted both (SUBACK 0x01, and with two
// identifiers it took the first); mosquitto closes the connection. The
// hub now answers DISCONNECT 0x82 (identifier 0) and 0x81 (twice: a
// property given twice, reported as malformed properties as patch 29 does).
func TestSubscriptionIdentifierProtocolErrors(t *testing.T) {
	subscribe := func(props ...byte) []byte {
		vh := append([]byte{0, 1, byte(len(props))}, props...)
		vh = append(vh, 0, 1, 'a', 1)
		return append(append([]byte{0x82}, varint(len(vh))...), vh...)
	}
	cases := map[string][]byte{
		"identifier 0":     subscribe(0x0b, 0),
		"identifier twice": subscribe(0x0b, 1, 0x0b, 2),
	}
	for broker, port := range interopBrokers(t) {
		for name, pk := range cases {
			t.Run(broker+"/"+name, func(t *testing.T) {
				c, _ := rawSession(t, port, "subid-"+broker, true)
				c.write(t, pk)
				c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
				b, err := io.ReadAll(c.c)
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatalf("connection still open after 10 s, read % x", b)
				}
				switch {
				case len(b) > 0 && b[0] == 0x90:
					t.Errorf("SUBACK % x, want the SUBSCRIBE refused as a protocol error", b)
				case broker == "hub" && (len(b) < 3 || b[0] != 0xe0 || b[2] != 0x81 && b[2] != 0x82):
					t.Errorf("answered % x, want DISCONNECT 0x82 (0x81 for a property given twice, as patch 29)", b)
				}
			})
		}
	}
}

// TestSharedSubscriptionEmptyShareName: "A Shared Subscription's Topic
// Filter MUST start with $share/ and MUST contain a ShareName that is at
// least one character long" [MQTT-4.8.2-1], and its filter after the
// ShareName is a topic filter of at least one character [MQTT-4.7.3-1].
// The hub granted $share//a (mosquitto 2.0.11 grants it too); now such a
// filter gets SUBACK 0x8F (3.1.1: 0x80) as the hub's other invalid
// filters do, and the valid ones in the same SUBSCRIBE are granted.
func TestSharedSubscriptionEmptyShareName(t *testing.T) {
	h := startHub(t, nil, true)
	c := dialV5(t, h.Ports().MQTT, "share-empty", "", "")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &pahov5.Subscribe{Subscriptions: []pahov5.SubscribeOptions{
		{Topic: "$share//a", QoS: 1}, {Topic: "$share/g/", QoS: 1}, {Topic: "$share/g/a", QoS: 1},
	}})
	if sa == nil {
		t.Fatalf("SUBSCRIBE: %v", err)
	}
	if want := []byte{0x8f, 0x8f, 0x01}; !bytes.Equal(sa.Reasons, want) {
		t.Errorf("SUBACK reasons % x, want % x", sa.Reasons, want)
	}
}
