package hub

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"

	"ledge/internal/testenv"
)

// TestHostileConnections: a hub limited to 400 file descriptors (prlimit)
// gets 500 TCP connections that never send CONNECT, 500 TLS connections
// that never send a ClientHello and 50 WebSocket connections that upgrade
// and stay silent. All are closed by the connect deadline, and all along a
// legitimate client connects and the dashboard (the same process's HTTP
// server) answers.
func TestHostileConnections(t *testing.T) {
	testenv.Integration(t, "a hub in a child process under prlimit, 1,000 connections, their 2 s deadline")
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Fatal("prlimit not found: apt-get install util-linux")
	}
	cfg := DefaultConfig()
	cfg.Hostname = "ledge.test"
	cfg.Listen = ListenConfig{MQTT: "127.0.0.1:0", MQTTS: "127.0.0.1:0"}
	cfg.ConnectTimeout = 2 * time.Second
	cfg.MaxPendingConnections = 128
	c := startChild(t, childSpec{Dir: t.TempDir(), Dev: true, Config: cfg, HTTP: true})
	if out, err := exec.Command(prlimit, "--pid", fmt.Sprint(c.pid), "--nofile=400:400").CombinedOutput(); err != nil {
		t.Fatalf("prlimit: %v %s", err, out)
	}
	httpc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	legit := func(when string) {
		t.Helper()
		o := paho.NewClientOptions().AddBroker(fmt.Sprintf("tcp://127.0.0.1:%d", c.port)).SetClientID("legit").
			SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
		cl := paho.NewClient(o)
		if tok := cl.Connect(); !tok.WaitTimeout(6*time.Second) || tok.Error() != nil {
			t.Fatalf("%s: a legitimate client could not connect: %v", when, tok.Error())
		}
		mustOK(t, cl.Publish("legit/x", 1, false, "ok"))
		cl.Disconnect(0)
		resp, err := httpc.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", c.httpPort))
		if err != nil {
			t.Fatalf("%s: dashboard: %v", when, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: dashboard %d", when, resp.StatusCode)
		}
	}
	legit("before")
	start := time.Now()
	var silent []net.Conn
	defer func() {
		for _, s := range silent {
			s.Close()
		}
	}()
	for i := range 1000 {
		port := c.port
		if i%2 == 1 {
			port = c.tlsPort
		}
		s, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		silent = append(silent, s)
		if i%200 == 199 {
			legit(fmt.Sprintf("after %d silent connections", i+1))
		}
	}
	for i := range 50 {
		ws, _, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws://127.0.0.1:%d/$iothub/websocket", c.httpPort), http.Header{"Sec-WebSocket-Protocol": {"mqtt"}})
		if err != nil {
			t.Fatalf("websocket %d: %v", i, err)
		}
		silent = append(silent, ws.UnderlyingConn())
	}
	legit("during the flood")

	// Every silent connection is closed by its deadline (2 s after it was
	// accepted, or earlier when the oldest were evicted).
	deadline := time.Now().Add(cfg.ConnectTimeout + 3*time.Second)
	open := 0
	buf := make([]byte, 1)
	for _, s := range silent {
		s.SetReadDeadline(deadline)
		_, err := s.Read(buf)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			open++
		}
	}
	if open > 0 {
		t.Errorf("%d of %d silent connections still open %s after the flood began", open, len(silent), time.Since(start).Round(time.Millisecond))
	}
	legit("after")
}

// TestConnectionsPerIdentity: one user's credentials hold at most
// hub.maxConnectionsPerIdentity connections; devices still get in, and the
// user may take over one of its own client ids.
func TestConnectionsPerIdentity(t *testing.T) {
	h := startHub(t, func(c *Config) { c.MaxConnectionsPerIdentity = 3 }, false)
	h.addIdentity(t, IdentitySpec{Name: "shared", Kind: KindUser, Password: "pw"})
	dev := h.addIdentity(t, IdentitySpec{Name: "dev9"})
	for i := range 3 {
		if _, err := h.connect(t, fmt.Sprintf("u-%d", i), "shared", "pw", false, nil); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	if _, err := h.connect(t, "u-3", "shared", "pw", false, nil); err == nil {
		t.Error("a fourth connection of the same identity was accepted")
	}
	if _, err := h.connect(t, "u-1", "shared", "pw", false, nil); err != nil {
		t.Errorf("taking over its own client id: %v", err)
	}
	if _, err := h.sasClient(t, "dev9", dev.PrimaryKey, false, nil); err != nil {
		t.Errorf("a device was locked out: %v", err)
	}
	waitFor(t, "count back to 3", func() bool { return h.Stats().ClientsConnected == 4 })
}
