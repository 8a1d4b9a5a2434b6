package hub

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"ledge/internal/testenv"
)

// mosquitto is a real broker standing in for the cloud.
type mosquitto struct {
	t    *testing.T
	bin  string
	conf string
	port int
	cmd  *exec.Cmd
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func newMosquitto(t *testing.T, extra string) *mosquitto {
	bin := testenv.Command(t, "mosquitto", "mosquitto")
	dir := t.TempDir()
	m := &mosquitto{t: t, bin: bin, port: freePort(t), conf: filepath.Join(dir, "mosquitto.conf")}
	conf := fmt.Sprintf("user root\nlistener %d 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\npersistence true\npersistence_location %s/\nmax_queued_messages 0\nlog_dest stderr\nlog_type error\n%s",
		m.port, dir, extra)
	if err := os.WriteFile(m.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.stop)
	return m
}

func (m *mosquitto) start() {
	m.cmd = exec.Command(m.bin, "-c", m.conf)
	m.cmd.Stderr = os.Stderr
	if err := m.cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	waitFor(m.t, "mosquitto listening", func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", m.port))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func (m *mosquitto) stop() {
	if m.cmd != nil && m.cmd.Process != nil {
		m.cmd.Process.Signal(syscall.SIGTERM)
		m.cmd.Wait()
		m.cmd = nil
	}
}

func (m *mosquitto) url() string { return fmt.Sprintf("tcp://127.0.0.1:%d", m.port) }

// child is a hub in a child process of the test binary.
type child struct {
	cmd      *exec.Cmd
	port     int
	pid      int
	httpPort int
	tlsPort  int
}

func startChild(t testing.TB, spec childSpec) *child {
	t.Helper()
	js, _ := json.Marshal(spec)
	bin := os.Args[0]
	if b := os.Getenv("LEDGE_HUB_CHILD_BIN"); b != "" {
		bin = b // another build of this test binary (BenchmarkHubAB)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), "LEDGE_HUB_CHILD="+string(js))
	// Extra environment for the child only (GODEBUG, GOGC... when tuning).
	cmd.Env = append(cmd.Env, strings.Fields(os.Getenv("LEDGE_HUB_CHILD_ENV"))...)
	cmd.Stderr = os.Stderr
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd}
	t.Cleanup(func() { c.kill() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("child hub did not start: %v", err)
	}
	if _, err := fmt.Sscanf(line, "ready %d %d %d %d", &c.port, &c.pid, &c.httpPort, &c.tlsPort); err != nil {
		t.Fatalf("child said %q", line)
	}
	return c
}

func (c *child) kill() {
	if c.cmd.Process != nil {
		c.cmd.Process.Signal(syscall.SIGKILL)
		c.cmd.Wait()
	}
}

// TestOutageKill9 is the acceptance test for store-and-forward: with the
// upstream (a real mosquitto) down, 10,000 QoS 1 messages in two
// priorities are acknowledged, ledge is killed with SIGKILL and
// restarted, mosquitto comes back, and every message arrives, in order
// within its priority (duplicates allowed).
func TestOutageKill9(t *testing.T) {
	const perPrio = 5000
	mq := newMosquitto(t, "")
	mq.start()

	// The cloud-side consumer: a persistent session, so what arrives
	// while it reconnects is kept for it.
	var mu sync.Mutex
	seen := map[string][]int{}
	sinkOpts := paho.NewClientOptions().AddBroker(mq.url()).SetClientID("cloud-sink").SetCleanSession(false).
		SetAutoReconnect(true).SetMaxReconnectInterval(200 * time.Millisecond).SetConnectRetry(true).SetOrderMatters(true)
	sinkOpts.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
		parts := strings.Split(string(m.Payload()), ":")
		n, _ := strconv.Atoi(parts[1])
		mu.Lock()
		seen[parts[0]] = append(seen[parts[0]], n)
		mu.Unlock()
	})
	sink := paho.NewClient(sinkOpts)
	mustOK(t, sink.Connect())
	defer sink.Disconnect(50)
	mustOK(t, sink.Subscribe("ledge/#", 1, nil))
	mq.stop() // the outage

	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.Hostname = "ledge.test"
	cfg.Listen = ListenConfig{MQTT: "127.0.0.1:0"}
	p0, p5 := 0, 5
	cfg.Routes = map[string]RouteConfig{
		"urgent": {Route: `FROM /messages/modules/alarm/* INTO $upstream`, Priority: &p0},
		"bulk":   {Route: `FROM /messages/modules/bulk/* INTO $upstream`, Priority: &p5},
	}
	// The hub reaches mosquitto through a gate the test opens once the
	// cloud-side consumer is back, so the consumer misses nothing.
	gate := newGate(t, mq.port)
	cfg.Upstream = UpstreamConfig{Mode: "mqtt", URL: gate.url(), ClientID: "ledge-outage", TopicTemplate: "ledge/{deviceId}/{sourceModule}", KeepAlive: 5 * time.Second}
	spec := childSpec{Dir: dir, Dev: true, Config: cfg}
	c := startChild(t, spec)

	pub := paho.NewClient(paho.NewClientOptions().AddBroker(fmt.Sprintf("tcp://127.0.0.1:%d", c.port)).SetClientID("producer").
		SetAutoReconnect(false).SetMaxResumePubInFlight(100))
	mustOK(t, pub.Connect())
	toks := make([]paho.Token, 0, 2*perPrio)
	for i := range perPrio {
		// Interleaved, so the backlog mixes both priorities.
		toks = append(toks, pub.Publish(fmt.Sprintf("devices/%s/modules/bulk/messages/events/", testDevice), 1, false, fmt.Sprintf("bulk:%d", i)))
		toks = append(toks, pub.Publish(fmt.Sprintf("devices/%s/modules/alarm/messages/events/", testDevice), 1, false, fmt.Sprintf("alarm:%d", i)))
	}
	for _, tok := range toks {
		mustOK(t, tok) // PUBACKed = committed
	}
	pub.Disconnect(0)

	c.kill() // kill -9 with 10,000 acknowledged messages queued
	startChild(t, spec)
	mq.start()
	waitFor(t, "cloud consumer reconnected", sink.IsConnectionOpen)
	gate.open()

	deadline := time.Now().Add(90 * time.Second)
	for {
		mu.Lock()
		done := distinct(seen["alarm"]) == perPrio && distinct(seen["bulk"]) == perPrio
		mu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			mu.Lock()
			t.Fatalf("after 90 s upstream has %d/%d alarm and %d/%d bulk messages", distinct(seen["alarm"]), perPrio, distinct(seen["bulk"]), perPrio)
		}
		time.Sleep(100 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, prio := range []string{"alarm", "bulk"} {
		if err := inOrder(seen[prio]); err != nil {
			t.Errorf("%s: %v", prio, err)
		}
	}
	t.Logf("received alarm %d (distinct %d), bulk %d (distinct %d)", len(seen["alarm"]), distinct(seen["alarm"]), len(seen["bulk"]), distinct(seen["bulk"]))
}

func distinct(ns []int) int {
	m := map[int]bool{}
	for _, n := range ns {
		m[n] = true
	}
	return len(m)
}

// inOrder checks that first deliveries come in increasing order
// (redeliveries may repeat earlier numbers).
func inOrder(ns []int) error {
	seen := map[int]bool{}
	last := -1
	for i, n := range ns {
		if seen[n] {
			continue
		}
		seen[n] = true
		if n < last {
			return fmt.Errorf("message %d first arrived after %d (position %d)", n, last, i)
		}
		last = n
	}
	return nil
}

// gate is a TCP proxy to a local port that refuses connections until
// opened.
type gate struct {
	l      net.Listener
	target int
	mu     sync.Mutex
	isOpen bool
}

func newGate(t *testing.T, target int) *gate {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{l: l, target: target}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			g.mu.Lock()
			ok := g.isOpen
			g.mu.Unlock()
			if !ok {
				c.Close()
				continue
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", g.target))
				if err != nil {
					return
				}
				defer u.Close()
				go func() { io.Copy(u, c); u.Close() }()
				io.Copy(c, u)
			}()
		}
	}()
	return g
}

func (g *gate) open() {
	g.mu.Lock()
	g.isOpen = true
	g.mu.Unlock()
}

func (g *gate) url() string { return "tcp://" + g.l.Addr().String() }
