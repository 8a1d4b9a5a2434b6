package hub

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"ledge/internal/testenv"
)

// TestWebSocket: MQTT over WebSocket at /$iothub/websocket, on the hub's
// own port (wss, the hub's certificate, as the Azure SDKs dial it) and
// through a handler as the web server mounts it.
func TestWebSocket(t *testing.T) {
	port := freePort(t)
	h := startHub(t, func(c *Config) { c.Listen.WebSocket = fmt.Sprintf("127.0.0.1:%d", port) }, false)
	dev := h.addIdentity(t, IdentitySpec{Name: "wsdev"})
	web := httptest.NewServer(http.StripPrefix("", h.WebSocketHandler()))
	defer web.Close()
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(h.CAPath())
	pool.AppendCertsFromPEM(pem)
	for _, u := range []string{fmt.Sprintf("wss://localhost:%d/$iothub/websocket", port), strings.Replace(web.URL, "http", "ws", 1) + "/$iothub/websocket"} {
		tok, _ := tokenFor(h, "wsdev", dev.PrimaryKey)
		got := newReceived()
		o := paho.NewClientOptions().AddBroker(u).SetClientID("wsdev").SetUsername(h.Hostname() + "/wsdev/?api-version=2021-04-12").
			SetPassword(tok).SetAutoReconnect(false).SetDefaultPublishHandler(got.handler).
			SetTLSConfig(&tls.Config{RootCAs: pool})
		c := paho.NewClient(o)
		mustOK(t, c.Connect())
		mustOK(t, c.Subscribe("$iothub/twin/res/#", 0, nil))
		mustOK(t, c.Publish("$iothub/twin/GET/?$rid=1", 0, false, ""))
		if m := got.next(t, "twin over websocket "+u); m.Topic() != "$iothub/twin/res/200/?$rid=1" {
			t.Errorf("%s: %q", u, m.Topic())
		}
		c.Disconnect(50)
	}
}

func tokenFor(h *testHub, device, key string) (string, error) {
	return tokenString(h.Hostname()+"/devices/"+device, key)
}

func tokenString(resource, key string) (string, error) {
	return buildTok(resource, key)
}

// TestX509: a device authenticates with a client certificate, by
// thumbprint (self-signed) or signed by the hub's CA with CN = its id.
func TestX509(t *testing.T) {
	h := startHub(t, nil, false)
	self := selfSigned(t, "camera-1")
	sum := sha256.Sum256(self.Certificate[0])
	h.addIdentity(t, IdentitySpec{Name: "camera-1", Thumbprint: hex.EncodeToString(sum[:])})
	h.addIdentity(t, IdentitySpec{Name: "camera-2", X509CA: true})
	signed := signedByHubCA(t, h, "camera-2")
	wrongCN := signedByHubCA(t, h, "camera-9")

	for _, tc := range []struct {
		name, cid string
		cert      tls.Certificate
		ok        bool
	}{
		{"thumbprint", "camera-1", self, true},
		{"ca-signed", "camera-2", signed, true},
		{"ca-signed, other CN", "camera-2", wrongCN, false},
		{"self-signed for a CA identity", "camera-2", self, false},
		{"thumbprint mismatch", "camera-1", signed, false},
	} {
		pool := x509.NewCertPool()
		pem, _ := os.ReadFile(h.CAPath())
		pool.AppendCertsFromPEM(pem)
		o := paho.NewClientOptions().AddBroker(fmt.Sprintf("ssl://127.0.0.1:%d", h.Ports().MQTTS)).SetClientID(tc.cid).
			SetUsername(h.Hostname() + "/" + tc.cid + "/?api-version=2021-04-12").SetAutoReconnect(false).
			SetTLSConfig(&tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{tc.cert}})
		c := paho.NewClient(o)
		tok := c.Connect()
		tok.WaitTimeout(5 * time.Second)
		if ok := tok.Error() == nil; ok != tc.ok {
			t.Errorf("%s: connected=%v (%v), want %v", tc.name, ok, tok.Error(), tc.ok)
		}
		c.Disconnect(0)
	}
}

func selfSigned(t *testing.T, cn string) tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func signedByHubCA(t *testing.T, h *testHub, cn string) tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, h.certs.ca, &key.PublicKey, h.certs.caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestCertificateRenewal: the server certificate is renewed before it
// expires and when a name is added; the CA stays.
func TestCertificateRenewal(t *testing.T) {
	dir := t.TempDir()
	c, err := loadCerts(dir, []string{"hub.local", "10.1.2.3"}, 90*24*time.Hour, 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	first := c.server.Load().Leaf
	if first.VerifyHostname("hub.local") != nil || first.VerifyHostname("10.1.2.3") != nil {
		t.Fatalf("names %v %v", first.DNSNames, first.IPAddresses)
	}
	if _, err := first.Verify(x509.VerifyOptions{Roots: c.caPool, DNSName: "hub.local"}); err != nil {
		t.Fatalf("server cert does not chain to the CA: %v", err)
	}
	// Same names, far from expiry: kept.
	c2, _ := loadCerts(dir, []string{"hub.local", "10.1.2.3"}, 90*24*time.Hour, 30*24*time.Hour)
	if c2.server.Load().Leaf.SerialNumber.Cmp(first.SerialNumber) != 0 || !c2.ca.Equal(c.ca) {
		t.Error("certificate re-made without need")
	}
	// 61 days later it is inside the renewal window: renewed, same CA.
	if err := c2.ensureServer(time.Now().Add(61 * 24 * time.Hour)); err != nil {
		t.Fatal(err)
	}
	if c2.server.Load().Leaf.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Error("not renewed inside the window")
	}
	// A new name: re-made.
	c3, _ := loadCerts(dir, []string{"hub.local", "10.1.2.3", "new.local"}, 90*24*time.Hour, 30*24*time.Hour)
	if c3.server.Load().Leaf.VerifyHostname("new.local") != nil || !c3.ca.Equal(c.ca) {
		t.Error("new name not added, or CA changed")
	}
}

// TestQuotaUnderFlood: a module that is not connected, a small quota, a
// flood of QoS 1 telemetry: the queue stays within the quota, the oldest
// are dropped and counted.
func TestQuotaUnderFlood(t *testing.T) {
	h := startHub(t, func(c *Config) {
		c.StoreAndForward.QuotaBytes = 64 << 10
		c.Routes = map[string]RouteConfig{"r": {Route: `FROM /messages/* INTO BrokeredEndpoint("/modules/away/inputs/in")`}}
	}, true)
	c, err := h.connect(t, "flood", "", "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	var toks []paho.Token
	for i := range 2000 {
		toks = append(toks, c.Publish("devices/flood/messages/events/", 1, false, fmt.Sprintf("%04d%s", i, strings.Repeat("x", 200))))
	}
	for _, tok := range toks {
		mustOK(t, tok)
	}
	st := h.Stats()
	if st.QueueBytes > 64<<10 || st.Drops["quota"] == 0 {
		t.Fatalf("queue bytes %d (quota %d), quota drops %d", st.QueueBytes, 64<<10, st.Drops["quota"])
	}
	var n, bytes int64
	h.db.QueryRow(`SELECT COUNT(*), COALESCE(SUM(length(data)),0) FROM hub_queue`).Scan(&n, &bytes)
	if bytes > 64<<10 || n+int64(st.Drops["quota"]) != 2000 {
		t.Errorf("database: %d messages, %d bytes; dropped %d; want 2000 in total within %d bytes; stats %+v", n, bytes, st.Drops["quota"], 64<<10, st)
	}
	// The newest survived.
	creds, _ := h.EnsureModule(t.Context(), "away")
	_ = creds
	got := newReceived()
	m, err := h.connect(t, testDevice+"/away", "", "", false, got.handler)
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, m.Subscribe("devices/"+testDevice+"/modules/away/inputs/#", 1, nil))
	first := got.next(t, "backlog")
	if n := string(first.Payload()[:4]); n == "0000" {
		t.Errorf("oldest message survived the quota")
	}
}

// TestTTLExpiryCounted: messages for a module that never comes expire and
// are counted.
func TestTTLExpiryCounted(t *testing.T) {
	ttl := int64(1)
	h := startHub(t, func(c *Config) {
		c.Routes = map[string]RouteConfig{"r": {Route: `FROM /messages/* INTO BrokeredEndpoint("/modules/away/inputs/in")`, TimeToLiveSecs: &ttl}}
	}, true)
	c, err := h.connect(t, "d", "", "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		mustOK(t, c.Publish("devices/d/messages/events/", 1, false, "x"))
	}
	waitFor(t, "expiry", func() bool { return h.Stats().Drops["expired"] == 10 })
	var n int
	waitFor(t, "rows deleted", func() bool { h.db.QueryRow(`SELECT COUNT(*) FROM hub_queue`).Scan(&n); return n == 0 })
}

// TestStopLeavesNoGoroutines: a hub that ran with clients, pumps and an
// upstream stops everything it started.
func TestStopLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	mq := newMosquitto(t, "")
	mq.start()
	cfg := DefaultConfig()
	cfg.Listen = ListenConfig{MQTT: "127.0.0.1:0", MQTTS: "127.0.0.1:0"}
	cfg.Routes = map[string]RouteConfig{"r": {Route: `FROM /messages/* INTO $upstream`}}
	cfg.Upstream = UpstreamConfig{Mode: "mqtt", URL: mq.url(), TopicTemplate: "x/{deviceId}", KeepAlive: 5 * time.Second}
	h, err := New(t.Context(), Options{Config: cfg, DB: testenv.DB(t), DataDir: t.TempDir(), DeviceID: "edge", Dev: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- h.Run(ctx) }()
	waitFor(t, "upstream", h.UpstreamConnected)
	th := &testHub{Hub: h}
	c, err := th.connect(t, "d", "", "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A backlog, so the upstream pump is in the middle of a batch (paho
	// Publish calls and waits for PUBACKs) when the hub stops.
	var toks []paho.Token
	for range 500 {
		toks = append(toks, c.Publish("devices/d/messages/events/", 1, false, "x"))
	}
	for _, tok := range toks {
		mustOK(t, tok)
	}
	c.Disconnect(10)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before+2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+2 {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines after stop, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

func buildTok(resource, key string) (string, error) {
	return azureToken(resource, key)
}

// TestWebSocketPortFloodBounded (audit finding 10, medium): the hub's own
// WebSocket port (hub.listen.websocket, where the Azure SDKs dial) held
// every TCP connection until it upgraded, with no bound: silent
// connections (no ClientHello), or one bad request and then nothing,
// took one file descriptor each, which the MQTT ports and the dashboard
// of the same process need. Now they count among the hub's pending
// connections (hub.maxPendingConnections, the oldest closed first), as
// on the MQTT ports; a client that upgrades and authenticates is not
// pending any more, and keeps its connection.
func TestWebSocketPortFloodBounded(t *testing.T) {
	port := freePort(t)
	h := startHub(t, func(c *Config) {
		c.Listen.WebSocket = fmt.Sprintf("127.0.0.1:%d", port)
		c.MaxPendingConnections = 32
		c.ConnectTimeout = time.Minute // the bound must do it, not the deadline
	}, false)
	dev := h.addIdentity(t, IdentitySpec{Name: "wsdev"})
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(h.CAPath())
	pool.AppendCertsFromPEM(pem)
	connect := func(id string) paho.Client {
		t.Helper()
		tok, _ := tokenFor(h, "wsdev", dev.PrimaryKey)
		o := paho.NewClientOptions().AddBroker(fmt.Sprintf("wss://localhost:%d/$iothub/websocket", port)).SetClientID(id).
			SetUsername(h.Hostname() + "/wsdev/?api-version=2021-04-12").SetPassword(tok).SetAutoReconnect(false).
			SetConnectTimeout(5 * time.Second).SetTLSConfig(&tls.Config{RootCAs: pool})
		c := paho.NewClient(o)
		mustOK(t, c.Connect())
		return c
	}
	first := connect("wsdev")
	defer first.Disconnect(0)

	var silent []net.Conn
	defer func() {
		for _, s := range silent {
			s.Close()
		}
	}()
	for i := range 300 {
		s, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		silent = append(silent, s)
	}
	// The hub closes the oldest pending connections as it accepts new
	// ones: wait until it has caught up (a closed one reads EOF), not for
	// a fixed time, which a loaded machine can outlast.
	closed := make([]bool, len(silent))
	open := len(silent)
	buf := make([]byte, 1)
	for deadline := time.Now().Add(20 * time.Second); open > 32 && time.Now().Before(deadline); {
		open = 0
		for i, s := range silent {
			if closed[i] {
				continue
			}
			s.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
			if _, err := s.Read(buf); err != nil {
				if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
					closed[i] = true
					continue
				}
			}
			open++
		}
	}
	if open > 32 {
		t.Errorf("%d of 300 silent connections to the WebSocket port held open, over hub.maxPendingConnections 32", open)
	}
	// The authenticated client kept its connection; a new one gets in.
	if !first.IsConnectionOpen() {
		t.Errorf("the authenticated WebSocket client lost its connection to the flood")
	}
	connect("wsdev").Disconnect(0)
}
