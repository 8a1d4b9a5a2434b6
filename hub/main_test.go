package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"ledge/hub/azure"
	"ledge/internal/testenv"
)

func TestMain(m *testing.M) {
	if os.Getenv("LEDGE_HUB_CHILD") != "" {
		os.Exit(childMain())
	}
	os.Exit(m.Run())
}

const testDevice = "edge"

type testHub struct {
	*Hub
	dir string
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("LEDGE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startHub runs a hub on free loopback ports until the test ends.
func startHub(t *testing.T, mutate func(*Config), dev bool) *testHub {
	t.Helper()
	return startHubAs(t, testDevice, mutate, dev)
}

func startHubAs(t *testing.T, deviceID string, mutate func(*Config), dev bool) *testHub {
	t.Helper()
	return startHubLogged(t, deviceID, mutate, dev, testLogger(t))
}

// startHubLogged is startHubAs with its log going to logger.
func startHubLogged(t *testing.T, deviceID string, mutate func(*Config), dev bool, logger *slog.Logger) *testHub {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Hostname = "ledge.test"
	cfg.Listen = ListenConfig{MQTT: "127.0.0.1:0", MQTTS: "127.0.0.1:0"}
	if mutate != nil {
		mutate(&cfg)
	}
	dir := t.TempDir()
	h, err := New(t.Context(), Options{Config: cfg, DB: testenv.DB(t), DataDir: dir, DeviceID: deviceID, Dev: dev, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("hub Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			var buf strings.Builder
			pprof.Lookup("goroutine").WriteTo(&buf, 1)
			t.Errorf("hub did not stop within 10 s; goroutines:\n%s", buf.String())
		}
	})
	waitFor(t, "hub listening", func() bool { return h.Ports().MQTT != 0 })
	return &testHub{Hub: h, dir: dir}
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// received collects messages of a paho client.
type received struct {
	mu   sync.Mutex
	msgs []paho.Message
	c    chan paho.Message
}

func newReceived() *received { return &received{c: make(chan paho.Message, 10000)} }

func (r *received) handler(_ paho.Client, m paho.Message) {
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
	select {
	case r.c <- m:
	default:
	}
}

func (r *received) next(t testing.TB, what string) paho.Message {
	t.Helper()
	select {
	case m := <-r.c:
		return m
	case <-time.After(10 * time.Second):
		t.Fatalf("no message: %s", what)
		return nil
	}
}

// sasClient connects a device ("d") or module ("d/m") identity the way an
// IoT Hub SDK does: client id, username with api-version, SAS password
// built per reference §4.3.
func (h *testHub) sasClient(t *testing.T, name, key string, overTLS bool, onMsg paho.MessageHandler) (paho.Client, error) {
	t.Helper()
	dev, mod, _ := strings.Cut(name, "/")
	tok, err := azure.BuildToken(azure.Resource(h.Hostname(), dev, mod), key, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	user := h.Hostname() + "/" + dev + "/"
	if mod != "" {
		user += mod + "/"
	}
	user += "?api-version=2021-04-12&DeviceClientType=ledge-test"
	return h.connect(t, name, user, tok, overTLS, onMsg)
}

func (h *testHub) connect(t *testing.T, clientID, user, pass string, overTLS bool, onMsg paho.MessageHandler) (paho.Client, error) {
	t.Helper()
	o := paho.NewClientOptions().SetClientID(clientID).SetUsername(user).SetPassword(pass).
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).SetCleanSession(true).SetOrderMatters(true)
	if overTLS {
		pool := x509.NewCertPool()
		pem, err := os.ReadFile(h.CAPath())
		if err != nil {
			t.Fatal(err)
		}
		pool.AppendCertsFromPEM(pem)
		o.AddBroker(fmt.Sprintf("ssl://127.0.0.1:%d", h.Ports().MQTTS)).SetTLSConfig(&tls.Config{RootCAs: pool, ServerName: h.Hostname()})
	} else {
		o.AddBroker(fmt.Sprintf("tcp://127.0.0.1:%d", h.Ports().MQTT))
	}
	if onMsg != nil {
		o.SetDefaultPublishHandler(onMsg)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c, nil
}

func mustOK(t testing.TB, tok paho.Token) {
	t.Helper()
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatal("mqtt operation timed out")
	}
	if err := tok.Error(); err != nil {
		t.Fatal(err)
	}
}

// subscribeCode subscribes and returns the SUBACK return code.
func subscribeCode(t testing.TB, c paho.Client, filter string, qos byte) byte {
	t.Helper()
	tok := c.Subscribe(filter, qos, nil)
	mustOK(t, tok)
	return tok.(*paho.SubscribeToken).Result()[filter]
}

func (h *testHub) addIdentity(t testing.TB, spec IdentitySpec) Created {
	t.Helper()
	c, err := h.AddIdentity(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func azureToken(resource, key string) (string, error) {
	return azure.BuildToken(resource, key, time.Now().Add(time.Hour))
}
