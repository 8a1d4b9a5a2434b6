package hub

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	pahov5 "github.com/eclipse/paho.golang/paho"
	paho "github.com/eclipse/paho.mqtt.golang"

	"ledge/hub/azure"
	"ledge/internal/testenv"
)

// v5Client is an MQTT 5 client from github.com/eclipse/paho.golang.
type v5Client struct {
	*pahov5.Client
	mu   sync.Mutex
	got  []*pahov5.Publish
	recv chan *pahov5.Publish
	disc chan *pahov5.Disconnect
	errs chan error
}

func dialV5(t *testing.T, port int, clientID, user, pass string) *v5Client {
	t.Helper()
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	c := &v5Client{recv: make(chan *pahov5.Publish, 100), disc: make(chan *pahov5.Disconnect, 1), errs: make(chan error, 10)}
	c.Client = pahov5.NewClient(pahov5.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(pahov5.PublishReceived) (bool, error){func(r pahov5.PublishReceived) (bool, error) {
			c.mu.Lock()
			c.got = append(c.got, r.Packet)
			c.mu.Unlock()
			c.recv <- r.Packet
			return true, nil
		}},
		OnServerDisconnect: func(d *pahov5.Disconnect) { c.disc <- d },
		OnClientError: func(err error) {
			select {
			case c.errs <- err:
			default:
			}
		},
	})
	cp := &pahov5.Connect{ClientID: clientID, CleanStart: true, KeepAlive: 30}
	if user != "" {
		cp.Username, cp.UsernameFlag, cp.Password, cp.PasswordFlag = user, true, []byte(pass), true
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, cp)
	if err != nil {
		t.Fatalf("paho.golang connect %s: %v (%+v)", clientID, err, ca)
	}
	t.Cleanup(func() { c.Disconnect(&pahov5.Disconnect{}) })
	return c
}

func (c *v5Client) publish(t *testing.T, p *pahov5.Publish) *pahov5.PublishResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	r, err := c.Publish(ctx, p)
	if err != nil && r == nil {
		t.Fatalf("publish %s: %v", p.Topic, err)
	}
	return r
}

// TestAcksPaho: an MQTT 5 client from a library we did not write. PUBACK
// and PUBREC carry a success reason code and none of the publisher's
// properties; user properties reach the subscriber unchanged.
func TestAcksPaho(t *testing.T) {
	h := startHub(t, nil, false)
	h.addIdentity(t, IdentitySpec{Name: "tool", Kind: KindUser, Password: "s3cret"})
	port := h.Ports().MQTT
	sub := dialV5(t, port, "sub", "tool", "s3cret")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := sub.Subscribe(ctx, &pahov5.Subscribe{Subscriptions: []pahov5.SubscribeOptions{{Topic: "conf/#", QoS: 2}}}); err != nil {
		t.Fatal(err)
	}
	pub := dialV5(t, port, "pub", "tool", "s3cret")
	user := pahov5.UserProperties{{Key: "a", Value: "2"}, {Key: "b", Value: "x y"}, {Key: "a", Value: "3"}}
	for _, qos := range []byte{1, 2} {
		r := pub.publish(t, &pahov5.Publish{Topic: fmt.Sprintf("conf/q%d", qos), QoS: qos, Payload: []byte("hi"),
			Properties: &pahov5.PublishProperties{User: user, ContentType: "text/plain"}})
		if r.ReasonCode != 0 {
			t.Errorf("QoS %d: ack reason code %#x, want 0x00 (success)", qos, r.ReasonCode)
		}
		if r.Properties != nil && (len(r.Properties.User) > 0 || r.Properties.ReasonString != "") {
			t.Errorf("QoS %d: ack carries properties %+v, want none", qos, r.Properties)
		}
		select {
		case m := <-sub.recv:
			if m.Properties == nil || fmt.Sprint(m.Properties.User) != fmt.Sprint(user) || m.Properties.ContentType != "text/plain" {
				t.Errorf("QoS %d: subscriber got properties %+v, want user %v and the content type", qos, m.Properties, user)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("QoS %d: nothing delivered", qos)
		}
	}

	// The same on the wire, byte for byte: PUBACK 40 02 00 07, PUBREC 50 02 00 08.
	c := rawV5(t, port, "raw", "tool", "s3cret")
	props := []byte{0x26, 0, 1, 'a', 0, 1, '2'} // user property a=2
	c.write(t, publishPacket(1, 7, "conf/raw", props, []byte("x")))
	if got := c.read(t); !bytes.Equal(got, []byte{0x40, 2, 0, 7}) {
		t.Errorf("PUBACK % x, want 40 02 00 07", got)
	}
	c.write(t, publishPacket(2, 8, "conf/raw", props, []byte("x")))
	if got := c.read(t); !bytes.Equal(got, []byte{0x50, 2, 0, 8}) {
		t.Errorf("PUBREC % x, want 50 02 00 08", got)
	}
}

// TestOversizedPublish: a publish over hub.maxMessageBytes is never
// acknowledged as a success: MQTT 5 gets PUBACK 0x95 (packet too large)
// and stays connected; MQTT 3.1.1 is disconnected. Both on plain topics
// and on IoT Hub telemetry.
func TestOversizedPublish(t *testing.T) {
	h := startHub(t, func(c *Config) {
		c.MaxMessageBytes = 4096
		c.Routes = map[string]RouteConfig{"r": {Route: `FROM /messages/* INTO BrokeredEndpoint("/modules/sink/inputs/in")`}}
	}, false)
	h.addIdentity(t, IdentitySpec{Name: "tool", Kind: KindUser, Password: "s3cret"})
	dev := h.addIdentity(t, IdentitySpec{Name: "big"})
	tok, _ := azureToken(azureResource(h, "big"), dev.PrimaryKey)
	devUser := h.Hostname() + "/big/?api-version=2021-04-12"
	big := bytes.Repeat([]byte("x"), 4097)
	port := h.Ports().MQTT

	for _, tc := range []struct{ name, cid, user, pass, topic string }{
		{"plain", "tool-1", "tool", "s3cret", "conf/big"},
		{"telemetry", "big", devUser, tok, "devices/big/messages/events/"},
	} {
		t.Run("v5-"+tc.name, func(t *testing.T) {
			c := dialV5(t, port, tc.cid, tc.user, tc.pass)
			r := c.publish(t, &pahov5.Publish{Topic: tc.topic, QoS: 1, Payload: big})
			if r.ReasonCode != 0x95 {
				t.Errorf("oversized publish: reason %#x, want 0x95 (packet too large)", r.ReasonCode)
			}
			r = c.publish(t, &pahov5.Publish{Topic: tc.topic, QoS: 1, Payload: big[:4096]})
			if r.ReasonCode >= 0x80 {
				t.Errorf("publish at the limit refused: %#x %+v", r.ReasonCode, r.Properties)
			}
		})
		t.Run("v311-"+tc.name, func(t *testing.T) {
			lost := make(chan error, 1)
			o := paho.NewClientOptions().AddBroker(fmt.Sprintf("tcp://127.0.0.1:%d", port)).SetClientID(tc.cid).
				SetUsername(tc.user).SetPassword(tc.pass).SetAutoReconnect(false).SetProtocolVersion(4).
				SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
			c := paho.NewClient(o)
			mustOK(t, c.Connect())
			defer c.Disconnect(0)
			pt := c.Publish(tc.topic, 1, false, big)
			select {
			case <-lost:
			case <-time.After(10 * time.Second):
				t.Fatal("MQTT 3.1.1 client still connected after an oversized publish")
			}
			if pt.WaitTimeout(time.Second) && pt.Error() == nil {
				t.Error("oversized publish acknowledged")
			}
		})
	}
	if d := h.Stats().Drops["too_large"]; d < 4 {
		t.Errorf("too_large drops %d, want 4", d)
	}
}

func azureResource(h *testHub, device string) string { return h.Hostname() + "/devices/" + device }

// rawConn speaks MQTT 5 byte by byte.
type rawConn struct{ c net.Conn }

func rawV5(t *testing.T, port int, cid, user, pass string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	var vh []byte
	vh = append(vh, str("MQTT")...)
	vh = append(vh, 5, 0x80|0x40|0x02, 0, 60, 0) // v5, user, password, clean start, keep-alive, no properties
	vh = append(vh, str(cid)...)
	vh = append(vh, str(user)...)
	vh = append(vh, str(pass)...)
	r := &rawConn{c}
	r.write(t, append(append([]byte{0x10}, varint(len(vh))...), vh...))
	if ack := r.read(t); len(ack) < 4 || ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("CONNACK % x", ack)
	}
	return r
}

func (r *rawConn) write(t *testing.T, b []byte) {
	t.Helper()
	if _, err := r.c.Write(b); err != nil {
		t.Fatal(err)
	}
}

// read returns one whole packet.
func (r *rawConn) read(t *testing.T) []byte {
	t.Helper()
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	hdr := make([]byte, 1, 5)
	if _, err := io.ReadFull(r.c, hdr); err != nil {
		t.Fatalf("read: %v", err)
	}
	n, mul := 0, 1
	for {
		b := make([]byte, 1)
		if _, err := io.ReadFull(r.c, b); err != nil {
			t.Fatalf("read: %v", err)
		}
		hdr = append(hdr, b[0])
		n += int(b[0]&0x7f) * mul
		mul *= 128
		if b[0]&0x80 == 0 {
			break
		}
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r.c, body); err != nil {
		t.Fatalf("read: %v", err)
	}
	return append(hdr, body...)
}

func varint(n int) []byte {
	var out []byte
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		out = append(out, b)
		if n == 0 {
			return out
		}
	}
}

// publishPacket builds an MQTT 5 PUBLISH.
func publishPacket(qos byte, id uint16, topic string, props, payload []byte) []byte {
	var vh []byte
	vh = append(vh, byte(len(topic)>>8), byte(len(topic)))
	vh = append(vh, topic...)
	if qos > 0 {
		vh = append(vh, byte(id>>8), byte(id))
	}
	vh = append(vh, varint(len(props))...)
	vh = append(vh, props...)
	vh = append(vh, payload...)
	return append(append([]byte{0x30 | qos<<1}, varint(len(vh))...), vh...)
}

// TestAzureSDKTopics: the exact topic strings the Azure IoT SDK for Node
// (azure-iot-device-mqtt 1.16) publishes: device telemetry with
// querystring-encoded system properties (%24.mid), and module outputs
// (sendOutputEvent) with a "/" after the property bag. The receiving
// input sees the same properties, and a WHERE on the last property and a
// $body query match.
func TestAzureSDKTopics(t *testing.T) {
	h := startHub(t, func(c *Config) {
		c.Routes = map[string]RouteConfig{
			"out":  {Route: `FROM /messages/modules/cam/outputs/out1 WHERE seq = '1' INTO BrokeredEndpoint("/modules/sink/inputs/seq")`},
			"body": {Route: `FROM /messages/modules/cam/outputs/out1 WHERE $body.label = 'person' INTO BrokeredEndpoint("/modules/sink/inputs/body")`},
			"dev":  {Route: `FROM /messages WHERE temp = '21' AND $body.x = 1 INTO BrokeredEndpoint("/modules/sink/inputs/dev")`},
		}
	}, false)
	dev := h.addIdentity(t, IdentitySpec{Name: "dev1"})
	cam, _ := h.EnsureModule(t.Context(), "cam")
	sinkCreds, _ := h.EnsureModule(t.Context(), "sink")
	got := newReceived()
	sink, err := h.sasClient(t, testDevice+"/sink", sinkCreds.PrimaryKey, false, got.handler)
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, sink.Subscribe("devices/"+testDevice+"/modules/sink/inputs/#", 1, nil))
	camc, err := h.sasClient(t, testDevice+"/cam", cam.PrimaryKey, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	devc, err := h.sasClient(t, "dev1", dev.PrimaryKey, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	// sendOutputEvent('out1', msg) with contentType, contentEncoding and a property seq=1.
	mustOK(t, camc.Publish("devices/"+testDevice+"/modules/cam/messages/events/%24.on=out1&%24.ct=application%2Fjson&%24.ce=utf-8&seq=1/", 1, false, `{"label":"person"}`))
	// sendEvent(msg) with messageId, contentType, contentEncoding and temp=21.
	mustOK(t, devc.Publish("devices/dev1/messages/events/%24.mid=m-7&%24.ct=application%2Fjson&%24.ce=utf-8&temp=21", 1, false, `{"x":1}`))

	seen := map[string]paho.Message{}
	for range 3 {
		m := got.next(t, "routed SDK message")
		input := strings.Split(m.Topic(), "/")[5]
		seen[input] = m
	}
	for input, want := range map[string]map[string]string{
		"seq":  {"seq": "1", "contentEncoding": "utf-8", "contentType": "application/json", "connectionModuleId": "cam"},
		"body": {"seq": "1", "contentEncoding": "utf-8"},
		"dev":  {"temp": "21", "messageId": "m-7", "contentEncoding": "utf-8", "connectionDeviceId": "dev1"},
	} {
		m, ok := seen[input]
		if !ok {
			t.Errorf("nothing routed to input %s (got %v)", input, seen)
			continue
		}
		prefix := "devices/" + testDevice + "/modules/sink/inputs/" + input + "/"
		app, sys, err := azure.ParseBag(strings.TrimPrefix(m.Topic(), prefix))
		if err != nil {
			t.Fatalf("%s: %v", m.Topic(), err)
		}
		for k, v := range want {
			if app[k] != v && sys[k] != v {
				t.Errorf("input %s: property %s = %q/%q, want %q (topic %s)", input, k, app[k], sys[k], v, m.Topic())
			}
		}
	}
}

// TestClientIDBelongsToItsIdentity: a plain user cannot take over another
// user's client id (connected, or held by a persistent session while
// away) and disconnect it; the holder itself can reconnect.
func TestClientIDBelongsToItsIdentity(t *testing.T) {
	h := startHub(t, nil, false)
	h.addIdentity(t, IdentitySpec{Name: "alice", Kind: KindUser, Password: "pw-a"})
	h.addIdentity(t, IdentitySpec{Name: "bob", Kind: KindUser, Password: "pw-b"})
	a, err := h.connect(t, "shared", "alice", "pw-a", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.connect(t, "shared", "bob", "pw-b", false, nil); err == nil {
		t.Error("bob took alice's client id")
	}
	// A round trip after bob's refusal: a disconnection of alice's would
	// have come before its answer.
	if tok := a.Subscribe("x/after-bob", 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil || !a.IsConnectionOpen() {
		t.Fatalf("alice was disconnected by bob's CONNECT (%v)", tok.Error())
	}
	a.Disconnect(50)

	// A persistent session keeps the id for alice while she is away.
	m := newMosq(t, h.Ports().MQTT, "alice", "pw-a")
	m.run(m.sub, "", "-c", "-i", "kept", "-q", "1", "-t", "x", "-E")
	mb := newMosq(t, h.Ports().MQTT, "bob", "pw-b")
	c := exec.CommandContext(t.Context(), mb.pub, mb.args("-i", "kept", "-t", "x", "-m", "1")...)
	c.WaitDelay = 15 * time.Second
	if out, err := c.CombinedOutput(); err == nil {
		t.Errorf("bob connected with the id of alice's persistent session: %s", out)
	}
	m.run(m.pub, "", "-i", "kept", "-t", "x", "-m", "1") // alice may
}

// TestSASTokenExpiry: a client that connected with a SAS token valid for
// 3 s is disconnected when it expires, not before.
func TestSASTokenExpiry(t *testing.T) {
	testenv.Integration(t, "waits for SAS tokens to expire: 6 s of real time")
	h := startHub(t, nil, false)
	dev := h.addIdentity(t, IdentitySpec{Name: "short"})
	var tok string
	for _, v := range []uint{4, 5} {
		exp := time.Unix(time.Now().Add(3*time.Second).Unix(), 0) // se is in whole seconds
		var err error
		tok, err = azure.BuildToken(azure.Resource(h.Hostname(), "short", ""), dev.PrimaryKey, exp)
		if err != nil {
			t.Fatal(err)
		}
		lost := make(chan time.Time, 1)
		o := paho.NewClientOptions().AddBroker(fmt.Sprintf("tcp://127.0.0.1:%d", h.Ports().MQTT)).SetClientID("short").
			SetUsername(h.Hostname() + "/short/?api-version=2021-04-12").SetPassword(tok).SetAutoReconnect(false).
			SetKeepAlive(time.Minute).SetConnectionLostHandler(func(paho.Client, error) { lost <- time.Now() })
		if v == 5 {
			c := dialV5(t, h.Ports().MQTT, "short", h.Hostname()+"/short/?api-version=2021-04-12", tok)
			select {
			case d := <-c.disc:
				if d.ReasonCode != 0x87 || time.Now().Before(exp) {
					t.Errorf("MQTT 5: DISCONNECT %#x at %s, want 0x87 at the expiry %s", d.ReasonCode, time.Now().Format(time.StampMilli), exp.Format(time.StampMilli))
				}
			case <-time.After(time.Until(exp) + 5*time.Second):
				t.Fatal("MQTT 5 client not disconnected at token expiry")
			}
			continue
		}
		c := paho.NewClient(o.SetProtocolVersion(v))
		mustOK(t, c.Connect())
		select {
		case at := <-lost:
			if at.Before(exp) {
				t.Errorf("disconnected at %s, before the token expired (%s)", at.Format(time.StampMilli), exp.Format(time.StampMilli))
			}
		case <-time.After(time.Until(exp) + 5*time.Second):
			t.Fatal("client still connected 5 s after its token expired")
		}
	}
	// An expired token does not connect.
	if _, err := h.connect(t, "short", h.Hostname()+"/short/?api-version=2021-04-12", tok, false, nil); err == nil {
		t.Error("connected with an expired token")
	}
}

// TestConnectionStringAsIs: the connection string ledge prints is enough
// to connect over TLS: GatewayHostName carries the MQTTS port when it is
// not 8883, HostName is the token audience.
func TestConnectionStringAsIs(t *testing.T) {
	h := startHub(t, nil, false)
	for _, name := range []string{"cs-dev", testDevice + "/cs-mod"} {
		created := h.addIdentity(t, IdentitySpec{Name: name})
		cs := map[string]string{}
		for _, kv := range strings.Split(created.ConnectionString, ";") {
			k, v, _ := strings.Cut(kv, "=")
			cs[k] = v
		}
		gw := cs["GatewayHostName"]
		if want := fmt.Sprintf("%s:%d", h.Hostname(), h.Ports().MQTTS); gw != want {
			t.Fatalf("%s: GatewayHostName %q, want %q (%s)", name, gw, want, created.ConnectionString)
		}
		host, port, _ := net.SplitHostPort(gw)
		cid, user := cs["DeviceId"], cs["HostName"]+"/"+cs["DeviceId"]+"/"
		if m := cs["ModuleId"]; m != "" {
			cid, user = cid+"/"+m, user+m+"/"
		}
		tok, err := azure.BuildToken(azure.Resource(cs["HostName"], cs["DeviceId"], cs["ModuleId"]), cs["SharedAccessKey"], time.Now().Add(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pem, _ := os.ReadFile(h.CAPath())
		pool.AppendCertsFromPEM(pem)
		o := paho.NewClientOptions().AddBroker("ssl://127.0.0.1:" + port).SetClientID(cid).SetUsername(user + "?api-version=2021-04-12").
			SetPassword(tok).SetAutoReconnect(false).SetTLSConfig(&tls.Config{RootCAs: pool, ServerName: host})
		c := paho.NewClient(o)
		mustOK(t, c.Connect())
		c.Disconnect(0)
	}
}

// TestMalformedTelemetryRefused: telemetry whose property bag cannot be
// parsed (a bad URL escape, as a hand-written client sends it) and an
// $iothub/ topic the hub does not serve are never acknowledged as a
// success: MQTT 5 gets PUBACK 0x90 (topic name invalid) and stays
// connected; MQTT 3.1.1 is disconnected. Each is counted as malformed.
func TestMalformedTelemetryRefused(t *testing.T) {
	h := startHub(t, nil, false)
	dev := h.addIdentity(t, IdentitySpec{Name: "bad"})
	tok, _ := azureToken(azureResource(h, "bad"), dev.PrimaryKey)
	user := h.Hostname() + "/bad/?api-version=2021-04-12"
	port := h.Ports().MQTT
	topics := []string{"devices/bad/messages/events/a=%zz", "$iothub/nonsense/POST/?$rid=1"}

	c := dialV5(t, port, "bad", user, tok)
	for _, topic := range topics {
		r := c.publish(t, &pahov5.Publish{Topic: topic, QoS: 1, Payload: []byte("x")})
		if r.ReasonCode != 0x90 {
			t.Errorf("MQTT 5, %s: reason %#x, want 0x90 (topic name invalid)", topic, r.ReasonCode)
		}
	}
	// Still connected: well-formed telemetry is acknowledged.
	if r := c.publish(t, &pahov5.Publish{Topic: "devices/bad/messages/events/a=1", QoS: 1, Payload: []byte("x")}); r.ReasonCode >= 0x80 {
		t.Errorf("MQTT 5: well-formed telemetry after the refusals: reason %#x", r.ReasonCode)
	}
	c.Disconnect(&pahov5.Disconnect{})

	for _, topic := range topics {
		lost := make(chan error, 1)
		o := paho.NewClientOptions().AddBroker(fmt.Sprintf("tcp://127.0.0.1:%d", port)).SetClientID("bad").
			SetUsername(user).SetPassword(tok).SetAutoReconnect(false).SetProtocolVersion(4).
			SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
		c := paho.NewClient(o)
		mustOK(t, c.Connect())
		pt := c.Publish(topic, 1, false, "x")
		select {
		case <-lost:
		case <-time.After(10 * time.Second):
			t.Errorf("MQTT 3.1.1, %s: still connected", topic)
		}
		if pt.WaitTimeout(time.Second) && pt.Error() == nil {
			t.Errorf("MQTT 3.1.1, %s: acknowledged", topic)
		}
		c.Disconnect(0)
	}
	if d := h.Stats().Drops[dropMalformed]; d != 4 {
		t.Errorf("malformed drops %d, want 4", d)
	}
}
