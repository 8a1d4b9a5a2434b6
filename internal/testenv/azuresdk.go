package testenv

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// SDKClient is a stock Azure IoT SDK client for Node (DeviceClient or
// ModuleClient from azure-iot-device, transport from
// azure-iot-device-mqtt, as npm has them) run by
// appliance/testdata/azure-sdk/driver.js, which the test drives with one
// JSON command a line and which tells what the SDK sees.
type SDKClient struct {
	t    testing.TB
	name string
	cmd  *exec.Cmd
	in   io.WriteCloser

	mu      sync.Mutex // guards the fields below
	next    int
	answers map[int]chan SDKLine
	events  []SDKLine
	changed chan struct{} // closed and replaced when an event comes
	out     strings.Builder
}

// SDKLine is one JSON line the driver printed: an answer or an event.
type SDKLine map[string]any

// Str is the value of k as text ("" when absent or null).
func (l SDKLine) Str(k string) string {
	if v, ok := l[k]; ok && v != nil {
		return fmt.Sprint(v)
	}
	return ""
}

// SDKEnv is how a driven SDK client is made (see driver.js).
type SDKEnv struct {
	Kind      string // device or module
	Transport string // mqtt (default) or mqttws
	CS        string // connection string; "" for a module: fromEnvironment
	CA        string // path of the hub's CA
	TokenTTL  int    // seconds; 0: the SDK's default (1 h)
	Methods   string // name:status:delayMs,...
	NoAck     string // inputs not completed
	Env       []string
}

// NodeIPv4First is the environment the SDK's Node runs with: the test
// hubs listen on 127.0.0.1 and the connection strings name "localhost",
// which a stock Debian's /etc/hosts gives ::1 first. Node 18 (Debian 12's
// nodejs) connects to the first address only, and would be refused; Node
// 20 and later try both (autoSelectFamily). An appliance listens on every
// interface by default, so its users never meet this.
const NodeIPv4First = "NODE_OPTIONS=--dns-result-order=ipv4first"

// StartSDK runs a driven SDK client until the test ends; its output is
// logged if the test failed.
func StartSDK(t testing.TB, name string, e SDKEnv) *SDKClient {
	t.Helper()
	dir := AzureSDK(t)
	c := &SDKClient{t: t, name: name, answers: map[int]chan SDKLine{}, changed: make(chan struct{})}
	c.cmd = exec.Command("node", "driver.js")
	c.cmd.Dir = dir
	c.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "SDK_KIND=" + e.Kind, "SDK_TRANSPORT=" + e.Transport,
		"SDK_CS=" + e.CS, "SDK_CA=" + e.CA, "SDK_METHODS=" + e.Methods, "SDK_NO_ACK=" + e.NoAck, NodeIPv4First}, e.Env...)
	if e.TokenTTL > 0 {
		c.cmd.Env = append(c.cmd.Env, fmt.Sprintf("SDK_TOKEN_TTL=%d", e.TokenTTL))
	}
	if os.Getenv("LEDGE_TEST_LOG") != "" {
		c.cmd.Env = append(c.cmd.Env, "DEBUG=azure*,mqtt*")
	}
	var err error
	if c.in, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c.cmd.Stderr = &lockedBuilder{mu: &c.mu, b: &c.out}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		c.cmd.Process.Kill()
		<-done
		c.cmd.Wait()
		if t.Failed() {
			t.Logf("SDK client %s said:\n%s", c.name, c.Output())
		}
	})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var l SDKLine
			c.mu.Lock()
			c.out.WriteString(sc.Text() + "\n")
			if json.Unmarshal(sc.Bytes(), &l) == nil {
				if id, ok := l["id"].(float64); ok {
					if ch := c.answers[int(id)]; ch != nil {
						ch <- l
					}
				} else {
					c.events = append(c.events, l)
					close(c.changed)
					c.changed = make(chan struct{})
				}
			}
			c.mu.Unlock()
		}
	}()
	if l := c.Wait("ready", nil); l.Str("event") == "fatal" {
		t.Fatalf("SDK client %s: %s", name, l.Str("message"))
	}
	return c
}

type lockedBuilder struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (l *lockedBuilder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// Output is everything the driver printed, with the SDK's debug log when
// LEDGE_TEST_LOG is set.
func (c *SDKClient) Output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.String()
}

// Do runs one SDK operation and returns its answer: the result, or the
// SDK's error.
func (c *SDKClient) Do(op string, args map[string]any) (SDKLine, error) {
	c.t.Helper()
	c.mu.Lock()
	c.next++
	id := c.next
	ch := make(chan SDKLine, 1)
	c.answers[id] = ch
	c.mu.Unlock()
	cmd := map[string]any{"id": id, "op": op}
	for k, v := range args {
		cmd[k] = v
	}
	b, _ := json.Marshal(cmd)
	if _, err := c.in.Write(append(b, '\n')); err != nil {
		c.t.Fatalf("SDK client %s: %v", c.name, err)
	}
	select {
	case l := <-ch:
		if l["ok"] != true {
			return l, fmt.Errorf("%s", l.Str("error"))
		}
		r, _ := l["result"].(map[string]any)
		return r, nil
	case <-time.After(60 * time.Second):
		c.t.Fatalf("SDK client %s: no answer to %s in 60 s", c.name, op)
		return nil, nil
	}
}

// Must runs an operation that must succeed.
func (c *SDKClient) Must(op string, args map[string]any) SDKLine {
	c.t.Helper()
	r, err := c.Do(op, args)
	if err != nil {
		c.t.Fatalf("SDK client %s: %s: %v", c.name, op, err)
	}
	return r
}

// All returns the events named ev that ok accepts (nil: all).
func (c *SDKClient) All(ev string, ok func(SDKLine) bool) []SDKLine {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []SDKLine
	for _, l := range c.events {
		if l.Str("event") == ev && (ok == nil || ok(l)) {
			out = append(out, l)
		}
	}
	return out
}

// Wait returns the first event named ev that ok accepts, waiting up to
// 30 s for it; a fatal event ends the wait too.
func (c *SDKClient) Wait(ev string, ok func(SDKLine) bool) SDKLine {
	c.t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		c.mu.Lock()
		ch := c.changed
		for _, l := range c.events {
			if e := l.Str("event"); e == ev && (ok == nil || ok(l)) || e == "fatal" {
				c.mu.Unlock()
				return l
			}
		}
		c.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			c.t.Fatalf("SDK client %s: no %s event in 30 s", c.name, ev)
		}
	}
}
