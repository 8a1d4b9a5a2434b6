package hub

import (
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"ledge/hub/azure"
	"ledge/internal/testenv"
)

func TestACL(t *testing.T) {
	h := startHub(t, func(c *Config) {
		c.Routes = map[string]RouteConfig{"all": {Route: `FROM /messages/* INTO BrokeredEndpoint("/modules/m1/inputs/in")`}}
		c.ACL = append(c.ACL, ACLRule{Identities: []string{"a"}, Publish: []string{"plain/{id}/#"}})
	}, false)
	a := h.addIdentity(t, IdentitySpec{Name: "a"})
	b := h.addIdentity(t, IdentitySpec{Name: "b"})
	m1, _ := h.EnsureModule(t.Context(), "m1")
	m2, _ := h.EnsureModule(t.Context(), "m2")
	user := h.addIdentity(t, IdentitySpec{Name: "sensor", Kind: KindUser, Password: "pw-123"})

	ca, err := h.sasClient(t, "a", a.PrimaryKey, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		filter string
		ok     bool
	}{
		{"devices/a/messages/devicebound/#", true},
		{"$iothub/twin/res/#", true},
		{"devices/b/messages/devicebound/#", false},
		{"devices/b/#", false},
		{"devices/#", false},
		{"devices/+/messages/devicebound/#", false},
		{"#", false},
		{"plain/x", false},
	} {
		code := subscribeCode(t, ca, tc.filter, 1)
		if ok := code < 0x80; ok != tc.ok {
			t.Errorf("device a subscribing %s: SUBACK %#x, want allowed=%v", tc.filter, code, tc.ok)
		}
	}

	// Module m1 reads its inputs, not m2's.
	mc, err := h.sasClient(t, testDevice+"/m1", m1.PrimaryKey, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if code := subscribeCode(t, mc, "devices/"+testDevice+"/modules/m2/inputs/#", 1); code < 0x80 {
		t.Errorf("module m1 subscribed to m2's inputs: SUBACK %#x", code)
	}
	if code := subscribeCode(t, mc, "devices/"+testDevice+"/modules/m1/inputs/#", 1); code >= 0x80 {
		t.Errorf("module m1 refused its own inputs: SUBACK %#x", code)
	}
	_ = m2

	// Publishing as b: the client is disconnected and nothing is routed.
	before := h.Stats().Routed
	tok := ca.Publish("devices/b/messages/events/", 1, false, "spoof")
	tok.WaitTimeout(3 * time.Second)
	waitFor(t, "spoofing client disconnected", func() bool { return !ca.IsConnectionOpen() })
	if h.Stats().Routed != before {
		t.Error("a message published as another device was routed")
	}

	// A plain user gets plain topics but not the IoT Hub namespace, and
	// cannot take a device's client id.
	uc, err := h.connect(t, "sensor-1", "sensor", "pw-123", false, nil)
	if err != nil {
		t.Fatalf("user: %v", err)
	}
	if code := subscribeCode(t, uc, "devices/#", 0); code < 0x80 {
		t.Error("user subscribed to devices/#")
	}
	if code := subscribeCode(t, uc, "sensors/#", 0); code >= 0x80 {
		t.Error("user refused sensors/#")
	}
	if _, err := h.connect(t, "b", "sensor", "pw-123", false, nil); err == nil {
		t.Error("user connected with device b's client id")
	}
	_ = user

	refused := []struct {
		name, cid, user, pass string
	}{
		{"expired token", "b", "ledge.test/b/?api-version=2021-04-12", token(t, "ledge.test/devices/b", b.PrimaryKey, -time.Minute)},
		{"wrong key", "b", "ledge.test/b/?api-version=2021-04-12", token(t, "ledge.test/devices/b", a.PrimaryKey, time.Hour)},
		{"token for another device", "b", "ledge.test/b/?api-version=2021-04-12", token(t, "ledge.test/devices/a", a.PrimaryKey, time.Hour)},
		{"wrong hub in audience", "b", "ledge.test/b/?api-version=2021-04-12", token(t, "other.hub/devices/b", b.PrimaryKey, time.Hour)},
		{"username for another device", "b", "ledge.test/a/?api-version=2021-04-12", token(t, "ledge.test/devices/b", b.PrimaryKey, time.Hour)},
		{"unknown device", "zz", "ledge.test/zz/?api-version=2021-04-12", token(t, "ledge.test/devices/zz", b.PrimaryKey, time.Hour)},
		{"wrong password", "u1", "sensor", "nope"},
		{"anonymous without dev mode", "anon", "", ""},
	}
	for _, r := range refused {
		if _, err := h.connect(t, r.cid, r.user, r.pass, false, nil); err == nil {
			t.Errorf("%s: connected", r.name)
		}
	}
	if h.Stats().AuthFailures < uint64(len(refused)) {
		t.Errorf("auth failures %d, want at least %d", h.Stats().AuthFailures, len(refused))
	}
}

func token(t *testing.T, resource, key string, ttl time.Duration) string {
	tok, err := azure.BuildToken(resource, key, time.Now().Add(ttl))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestDevModeAnonymousLoopbackOnly(t *testing.T) {
	h := startHub(t, nil, true)
	if _, err := h.connect(t, "anon", "", "", false, nil); err != nil {
		t.Fatalf("dev mode, loopback, anonymous: %v", err)
	}
	if isLoopback("192.168.1.5:1234") || !isLoopback("[::1]:1") {
		t.Error("isLoopback")
	}
}

// TestMosquittoClients: Debian's mosquitto_pub and mosquitto_sub against
// the hub, plain and over TLS verified with the generated CA.
func TestMosquittoClients(t *testing.T) {
	pub := testenv.Command(t, "mosquitto_pub", "mosquitto-clients")
	h := startHub(t, nil, false)
	h.addIdentity(t, IdentitySpec{Name: "tool", Kind: KindUser, Password: "s3cret"})
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"plain", []string{"-h", "127.0.0.1", "-p", fmt.Sprint(h.Ports().MQTT)}},
		{"tls", []string{"-h", "127.0.0.1", "-p", fmt.Sprint(h.Ports().MQTTS), "--cafile", h.CAPath()}},
		{"tls-hostname", []string{"-h", "localhost", "-p", fmt.Sprint(h.Ports().MQTTS), "--cafile", h.CAPath()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			auth := []string{"-u", "tool", "-P", "s3cret"}
			topic := "sensors/" + tc.name
			s := testenv.MosquittoSub(t, t.Context(), append(append(append([]string{}, tc.args...), auth...), "-t", "sensors/#", "-C", "1", "-v", "-q", "1", "-W", "10")...)
			p := exec.Command(pub, append(append(append([]string{}, tc.args...), auth...), "-t", topic, "-m", "21.5", "-q", "1")...)
			if b, err := p.CombinedOutput(); err != nil {
				t.Fatalf("mosquitto_pub: %v %s", err, b)
			}
			if line, _ := s.Next(10 * time.Second); line != topic+" 21.5" {
				t.Errorf("mosquitto_sub got %q", line)
			}
			s.Wait()
		})
	}
	// Wrong password: refused.
	p := exec.Command(pub, "-h", "127.0.0.1", "-p", fmt.Sprint(h.Ports().MQTT), "-u", "tool", "-P", "bad", "-t", "x", "-m", "y")
	if b, err := p.CombinedOutput(); err == nil {
		t.Errorf("mosquitto_pub with a wrong password succeeded: %s", b)
	}
}

// TestMalformedPacketDropsOnlyItsClient: garbage after a valid CONNECT
// closes that connection; another client keeps working.
func TestMalformedPacketDropsOnlyItsClient(t *testing.T) {
	h := startHub(t, nil, true)
	got := newReceived()
	good, err := h.connect(t, "good", "", "", false, got.handler)
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, good.Subscribe("t/#", 0, nil))

	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", h.Ports().MQTT))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// CONNECT, MQTT 3.1.1, clean session, client id "bad".
	c.Write([]byte{0x10, 15, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60, 0, 3, 'b', 'a', 'd'})
	ack := make([]byte, 4)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("CONNACK %x %v", ack, err)
	}
	// A PUBLISH whose topic length runs past the packet, then a reserved type.
	c.Write([]byte{0x30, 5, 0, 200, 'a', 'b', 'c', 0xF0, 0})
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(ack); err == nil {
		t.Error("connection still open after a malformed packet")
	}
	mustOK(t, good.Publish("t/1", 0, false, "still here"))
	if m := got.next(t, "message after the malformed client"); string(m.Payload()) != "still here" {
		t.Errorf("got %q", m.Payload())
	}
}

// TestWill: a Will on the device's telemetry topic is routed as telemetry
// marked iothub-MessageType=Will; a Will on a topic the client may not
// publish to refuses the CONNECT.
func TestWill(t *testing.T) {
	h := startHub(t, func(c *Config) {
		c.Routes = map[string]RouteConfig{"r": {Route: `FROM /messages/* INTO BrokeredEndpoint("/modules/sink/inputs/in")`}}
	}, false)
	dev := h.addIdentity(t, IdentitySpec{Name: "w1"})
	sinkCreds, _ := h.EnsureModule(t.Context(), "sink")
	got := newReceived()
	sink, err := h.sasClient(t, testDevice+"/sink", sinkCreds.PrimaryKey, false, got.handler)
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, sink.Subscribe("devices/"+testDevice+"/modules/sink/inputs/#", 1, nil))

	tok, _ := azure.BuildToken(azure.Resource(h.Hostname(), "w1", ""), dev.PrimaryKey, time.Now().Add(time.Hour))
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", h.Ports().MQTT))
	if err != nil {
		t.Fatal(err)
	}
	conn.Write(connectPacket("w1", h.Hostname()+"/w1/?api-version=2021-04-12", tok, "devices/w1/messages/events/", "gone"))
	ack := make([]byte, 4)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(ack); err != nil || ack[3] != 0 {
		t.Fatalf("CONNACK %x %v", ack, err)
	}
	conn.Close() // abnormal: the Will goes out
	m := got.next(t, "will routed")
	if string(m.Payload()) != "gone" || !strings.Contains(m.Topic(), "iothub-messagetype=Will") {
		t.Errorf("will %q %q", m.Topic(), m.Payload())
	}

	// A Will on another device's topic: refused.
	conn2, _ := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", h.Ports().MQTT))
	defer conn2.Close()
	conn2.Write(connectPacket("w1", h.Hostname()+"/w1/?api-version=2021-04-12", tok, "devices/other/messages/events/", "x"))
	conn2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn2.Read(ack); err != nil || ack[3] == 0 {
		t.Errorf("will on a foreign topic: CONNACK %x %v, want a refusal", ack, err)
	}
}

// connectPacket builds an MQTT 3.1.1 CONNECT with a QoS 0 Will.
func connectPacket(cid, user, pass, willTopic, willMsg string) []byte {
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	var vh []byte
	vh = append(vh, str("MQTT")...)
	vh = append(vh, 4, 0x80|0x40|0x04|0x02, 0, 60) // user, password, will, clean
	vh = append(vh, str(cid)...)
	vh = append(vh, str(willTopic)...)
	vh = append(vh, str(willMsg)...)
	vh = append(vh, str(user)...)
	vh = append(vh, str(pass)...)
	var rl []byte
	for n := len(vh); ; {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		rl = append(rl, b)
		if n == 0 {
			break
		}
	}
	return append(append([]byte{0x10}, rl...), vh...)
}
