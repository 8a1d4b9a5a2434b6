package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"

	"ledge/internal/testenv"
)

// The kill -9 tests of this file drive `ledge run` as a process with
// stock clients (mosquitto_pub/sub, the Azure IoT SDK for Node, the ledge
// CLI): each acknowledgement is followed at once by kill -9, and after a
// restart on the same data dir the acknowledged thing must be there.

var (
	kwOnce sync.Once
	kwBin  string
	kwErr  error
)

// killWindowBin is ledge built with -tags ledge_killwindow: its hub holds
// each persistent-session commit back by $LEDGE_HUB_COMMIT_DELAY, so an
// acknowledgement sent before its commit is followed by the kill inside
// that window (without it, the commit usually wins the race and such a
// bug passes).
func killWindowBin(t *testing.T) string {
	t.Helper()
	kwOnce.Do(func() {
		kwBin = filepath.Join(filepath.Dir(ledgeBin), "ledge-killwindow")
		out, err := exec.Command("go", "build", "-tags", "ledge_killwindow", "-o", kwBin, ".").CombinedOutput()
		if err != nil {
			kwErr = fmt.Errorf("build ledge -tags ledge_killwindow: %v\n%s", err, out)
		}
	})
	if kwErr != nil {
		t.Fatal(kwErr)
	}
	return kwBin
}

// k9Ledge is a `ledge run` that a test kills and starts again on the same
// config and data dir, with the hub's listeners on ports fixed for the
// test (clients find it again after the restart).
type k9Ledge struct {
	t    *testing.T
	bin  string
	conf string
	env  []string
	args []string
	d    *runningLedge
}

func (k *k9Ledge) start() {
	k.t.Helper()
	addr := freePort(k.t)
	if k.d != nil {
		addr = k.d.addr
	}
	k.d = launch(k.t, &runningLedge{bin: k.bin, addr: addr, stderr: &syncBuffer{}, done: make(chan error, 1)}, "", k.env,
		append([]string{"run", "--config", k.conf}, k.args...)...)
}

// kill9 kills the process with SIGKILL: nothing is flushed on the way out.
func (k *k9Ledge) kill9() {
	k.d.cmd.Process.Kill()
	err := <-k.d.done
	k.d.done <- err
}

func (k *k9Ledge) cli(args ...string) string {
	k.t.Helper()
	out, errOut, code := ledgeStdin(k.t, "", "", k.env, append(args, "--config", k.conf)...)
	if code != 0 {
		k.t.Fatalf("ledge %v: exit %d\n%s\n%s", args, code, out, errOut)
	}
	return out
}

// k9Config writes a ledge.yaml for a k9Ledge; hub is YAML under hub:
// (indented two spaces), after the listeners.
func k9Config(t *testing.T, mqtt, mqtts, hub string) string {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "site", "ledge.yaml")
	os.MkdirAll(filepath.Dir(conf), 0o755)
	doc := "deviceId: k9-" + strconv.Itoa(os.Getpid()) + "-" + strconv.Itoa(int(time.Now().UnixNano()%1e6)) +
		"\ndataDir: ledge-data\nhttp:\n  listenTLS: 127.0.0.1:0\nhub:\n  listen:\n    mqtt: " + mqtt + "\n    mqtts: " + mqtts + "\n" + hub
	if err := os.WriteFile(conf, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return conf
}

// mosq runs mosquitto_pub or mosquitto_sub against 127.0.0.1:port and
// returns its output; a non-zero exit fails the test.
func mosq(t *testing.T, tool, port string, args ...string) string {
	t.Helper()
	bin := testenv.Command(t, tool, "mosquitto-clients")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append([]string{"-h", "127.0.0.1", "-p", port}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", tool, args, err, out)
	}
	return string(out)
}

// TestKill9MQTTAcks: what the hub of `ledge run` acknowledged to stock
// MQTT clients survives kill -9 right after the acknowledgement: a
// persistent session's subscriptions (SUBACK to mosquitto_sub), a QoS 1
// message queued for that session while its client is away and a
// retained message (PUBACK to mosquitto_pub), and the removal of one of
// the subscriptions (UNSUBACK to paho.golang). Each commit is held back
// 300 ms (killWindowBin).
func TestKill9MQTTAcks(t *testing.T) {
	port := strings.TrimPrefix(freePort(t), "127.0.0.1:")
	k := &k9Ledge{t: t, bin: killWindowBin(t), conf: k9Config(t, "127.0.0.1:"+port, "127.0.0.1:0", ""),
		env: []string{"LEDGE_RUNTIME_DIR=" + t.TempDir(), "LEDGE_HUB_COMMIT_DELAY=300ms"}, args: []string{"--dev"}}
	k.start()
	session := []string{"-V", "mqttv5", "-x", "3600", "-c", "-q", "1", "-i", "k9-sub"}

	// 1: SUBACK of a persistent session (-E: mosquitto_sub exits once it
	// has it).
	mosq(t, "mosquitto_sub", port, append(session, "-t", "k9/sub", "-t", "k9/keep", "-E")...)
	k.kill9()
	k.start()

	// 2: a QoS 1 message for the session, whose client is away, and a
	// retained message.
	mosq(t, "mosquitto_pub", port, "-V", "mqttv5", "-q", "1", "-t", "k9/sub", "-m", "queued")
	mosq(t, "mosquitto_pub", port, "-V", "mqttv5", "-q", "1", "-r", "-t", "k9/ret", "-m", "kept")
	k.kill9()
	k.start()
	if got := strings.TrimSpace(mosq(t, "mosquitto_sub", port, append(session, "-t", "k9/sub", "-C", "1", "-W", "10")...)); got != "queued" {
		t.Errorf("the persistent session after kill -9 got %q, want the QoS 1 message queued for it (its SUBACKed subscription lost?)", got)
	}
	if got := strings.TrimSpace(mosq(t, "mosquitto_sub", port, "-t", "k9/ret", "-C", "1", "-W", "10", "--retained-only")); got != "kept" {
		t.Errorf("retained after kill -9: %q, want kept", got)
	}

	// 3: UNSUBACK: the session resumes with paho.golang, unsubscribes
	// k9/sub, and ledge is killed as the UNSUBACK arrives.
	conn, err := net.Dial("tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, OnClientError: func(error) {}})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	expiry := uint32(3600)
	if ca, err := c.Connect(ctx, &paho.Connect{ClientID: "k9-sub", KeepAlive: 30, Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}); err != nil || !ca.SessionPresent {
		t.Fatalf("paho resuming the session: %v %+v", err, ca)
	}
	if _, err := c.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{"k9/sub"}}); err != nil {
		t.Fatal(err)
	}
	k.kill9()
	k.start()
	// In publish order: were k9/sub still the session's, "gone" would
	// come first.
	mosq(t, "mosquitto_pub", port, "-V", "mqttv5", "-q", "1", "-t", "k9/sub", "-m", "gone")
	mosq(t, "mosquitto_pub", port, "-V", "mqttv5", "-q", "1", "-t", "k9/keep", "-m", "kept")
	// Everything the session gets in 3 s ("queued" may come again: paho
	// acknowledged its redelivery just before the kill, and QoS 1 is at
	// least once).
	bin := testenv.Command(t, "mosquitto_sub", "mosquitto-clients")
	out, _ := exec.CommandContext(t.Context(), bin, append([]string{"-h", "127.0.0.1", "-p", port}, append(session, "-t", "k9/keep", "-v", "-W", "3")...)...).Output()
	if got := string(out); !strings.Contains(got, "k9/keep kept") || strings.Contains(got, "gone") {
		t.Errorf("after UNSUBACK of k9/sub and kill -9 the session got %q, want k9/keep kept and nothing from k9/sub", got)
	}
}

// TestKill9AzureAcks: what the hub of `ledge run` acknowledged to stock
// Azure IoT SDK clients, and what the CLI said it did to a twin, survives
// kill -9 right after: a device's reported-property patch (status 204 on
// $iothub/twin/res), a module's output message routed to another module's
// input (PUBACK; the receiving module is not connected yet), and a
// desired-property patch made with `ledge twin patch`.
func TestKill9AzureAcks(t *testing.T) {
	mqtts := freePort(t)
	hub := "  hostname: localhost\n  routes:\n    toSink:\n      route: FROM /messages/modules/src/outputs/* INTO BrokeredEndpoint(\"/modules/sink/inputs/in\")\n"
	conf := k9Config(t, "127.0.0.1:0", mqtts, hub)
	k := &k9Ledge{t: t, conf: conf, env: []string{"LEDGE_RUNTIME_DIR=" + t.TempDir()}}
	k.start()
	dev := regexp.MustCompile(`deviceId: (\S+)`).FindStringSubmatch(readFile(t, conf))[1]
	ca := filepath.Join(filepath.Dir(conf), "ledge-data", "hub", "ca.pem")
	csOf := func(out string) string {
		cs := regexp.MustCompile(`HostName=\S+`).FindString(out)
		if cs == "" {
			t.Fatalf("no connection string in:\n%s", out)
		}
		return cs
	}
	thermoCS := csOf(k.cli("identity", "add", "thermo"))
	srcCS := csOf(k.cli("identity", "add", dev+"/src", "--kind", "module"))
	sinkCS := csOf(k.cli("identity", "add", dev+"/sink", "--kind", "module"))

	thermo := testenv.StartSDK(t, "thermo", testenv.SDKEnv{Kind: "device", CS: thermoCS, CA: ca})
	thermo.Must("open", nil)
	thermo.Must("getTwin", nil)
	src := testenv.StartSDK(t, "src", testenv.SDKEnv{Kind: "module", CS: srcCS, CA: ca})
	src.Must("open", nil)

	thermo.Must("report", map[string]any{"patch": map[string]any{"fw": "k9-1.2"}})
	k.kill9()
	k.start()
	src.Must("send", map[string]any{"body": "job-k9", "output": "out1"})
	k.kill9()
	k.start()
	k.cli("twin", "patch", "thermo", `{"interval": 9}`)
	k.kill9()
	k.start()

	out := k.cli("twin", "get", "thermo")
	var tw struct {
		Desired  map[string]any `json:"desired"`
		Reported map[string]any `json:"reported"`
	}
	if err := json.Unmarshal([]byte(out), &tw); err != nil {
		t.Fatalf("twin get: %v\n%s", err, out)
	}
	if tw.Reported["fw"] != "k9-1.2" {
		t.Errorf("the reported patch answered 204 is gone after kill -9: reported %v", tw.Reported)
	}
	if tw.Desired["interval"] != 9.0 {
		t.Errorf("the desired patch `ledge twin patch` reported done is gone after kill -9: desired %v", tw.Desired)
	}
	sink := testenv.StartSDK(t, "sink", testenv.SDKEnv{Kind: "module", CS: sinkCS, CA: ca})
	sink.Must("open", nil)
	if in := sink.Wait("input", nil); in.Str("body") != "job-k9" {
		t.Errorf("the sink module's input after kill -9: %v, want job-k9 (the routed output acknowledged to src)", in)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestKill9KeepsRemovals: what the CLI reported removed or undone stays
// so after kill -9 right after it, and a restart on the same data dir
// (TestKill9KeepsWhatTheCLIWasToldIsDone has the additions): an identity
// removed, an API token revoked, a pipeline removed, a deployment rolled
// back.
func TestKill9KeepsRemovals(t *testing.T) {
	conf := siteConfig(t)
	dir := filepath.Dir(conf)
	k := &k9Ledge{t: t, conf: conf, env: []string{"LEDGE_RUNTIME_DIR=" + t.TempDir()}}
	k.start()
	k.cli("identity", "add", "k9-gone")
	k.cli("identity", "add", "k9-kept")
	token := strings.TrimSpace(k.cli("admin", "token", "create", "k9tok"))
	pipe := filepath.Join(dir, "cam.yaml")
	os.WriteFile(pipe, []byte("name: k9gone\nsource: {url: \"testpattern:\", width: 160, height: 120, fps: 5}\n"), 0o644)
	k.cli("pipelines", "add", pipe)
	for _, v := range []string{"1", "2"} {
		dep := filepath.Join(dir, "deployment-"+v+".yaml")
		os.WriteFile(dep, []byte("version: k9-"+v+"\npipelines:\n  - name: k9dep"+v+"\n    source: {url: \"testpattern:\", width: 160, height: 120, fps: 5}\n"), 0o644)
		k.cli("deploy", "apply", "--wait", dep)
	}

	k.cli("identity", "remove", "k9-gone")
	k.kill9()
	k.start()
	if out := k.cli("identity", "list"); strings.Contains(out, "k9-gone") || !strings.Contains(out, "k9-kept") {
		t.Errorf("after identity remove k9-gone and kill -9:\n%s", out)
	}

	k.cli("admin", "token", "revoke", "k9tok")
	k.kill9()
	k.start()
	req, _ := http.NewRequest("GET", "http://"+k.d.addr+"/api/v1/system", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("the revoked API token after kill -9: %d, want 401", resp.StatusCode)
		}
	}

	k.cli("pipelines", "rm", "k9gone")
	k.kill9()
	k.start()
	if out := k.cli("pipelines", "list"); strings.Contains(out, "k9gone") {
		t.Errorf("the removed pipeline is back after kill -9:\n%s", out)
	}

	k.cli("deploy", "rollback")
	k.kill9()
	k.start()
	out := k.cli("deploy", "status")
	if !strings.Contains(out, "k9-1") || strings.Contains(out, "k9-2") {
		t.Errorf("after deploy rollback and kill -9, want k9-1 deployed:\n%s", out)
	}
	if out := k.cli("pipelines", "list"); !strings.Contains(out, "k9dep1") || strings.Contains(out, "k9dep2") {
		t.Errorf("after deploy rollback and kill -9, want k9dep1 running, not k9dep2:\n%s", out)
	}
}

// TestKill9ModelsCLI: `ledge models pull --file --activate` (handed over
// through the import folder, downloaded after the CLI returns), `models
// activate` and `models rollback`, each followed at once by kill -9: after
// the restart the store has what the CLI reported, and the pull finishes
// and activates as it was told to.
func TestKill9ModelsCLI(t *testing.T) {
	conf := siteConfig(t)
	k := &k9Ledge{t: t, conf: conf, env: []string{"LEDGE_RUNTIME_DIR=" + t.TempDir()}}
	k.start()
	yolox := testenv.Model(t, "yolox_nano.onnx")
	fd := testenv.Model(t, "fastestdet.onnx")
	active := func(want string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second * testenv.Slowdown())
		for {
			out := k.cli("models", "list")
			if regexpLine(out, `people\s+`+want+`\s+active\s`) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("people@%s not active after kill -9 and a restart:\n%s", want, out)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	k.cli("models", "pull", "people@1", "--file", yolox, "--kind", "yolox", "--activate")
	k.kill9()
	k.start()
	active("1")

	k.cli("models", "pull", "people@2", "--file", fd, "--kind", "fastestdet", "--wait")
	k.cli("models", "activate", "people@2")
	k.kill9()
	k.start()
	active("2")

	k.cli("models", "rollback", "people")
	k.kill9()
	k.start()
	active("1")
}

// TestSessionResubscribeKeepsAck: mosquitto_sub -c -C 1 as a polling
// consumer (subscribes at every connect, takes one message, acknowledges
// it and leaves at once) gets each message once. With the SUBACK of a
// persistent session waiting for its commit, an identical re-subscribe
// used to wait too: the consumer's PUBACK came meanwhile, the hub's
// SUBACK then met a closed connection, the PUBACK was discarded with it,
// and the same message came back at every poll. Commits are held back
// 300 ms (killWindowBin), as on a slow SD card.
func TestSessionResubscribeKeepsAck(t *testing.T) {
	port := strings.TrimPrefix(freePort(t), "127.0.0.1:")
	k := &k9Ledge{t: t, bin: killWindowBin(t), conf: k9Config(t, "127.0.0.1:"+port, "127.0.0.1:0", ""),
		env: []string{"LEDGE_RUNTIME_DIR=" + t.TempDir(), "LEDGE_HUB_COMMIT_DELAY=300ms"}, args: []string{"--dev"}}
	k.start()
	poll := []string{"-V", "mqttv5", "-x", "3600", "-c", "-q", "1", "-i", "poller", "-t", "poll/t"}
	mosq(t, "mosquitto_sub", port, append(poll, "-E")...)
	for _, m := range []string{"m1", "m2", "m3"} {
		mosq(t, "mosquitto_pub", port, "-V", "mqttv5", "-q", "1", "-t", "poll/t", "-m", m)
		if got := strings.TrimSpace(mosq(t, "mosquitto_sub", port, append(poll, "-C", "1", "-W", "10")...)); got != m {
			t.Fatalf("poll after publishing %s got %q", m, got)
		}
	}
}

// TestKill9UpstreamQueue: telemetry a stock Azure SDK device sent while
// the upstream broker is down (acknowledged: PUBACK once it is in the
// store-and-forward queue) survives kill -9 of ledge right after, and
// reaches the upstream (mosquitto) once it is up.
func TestKill9UpstreamQueue(t *testing.T) {
	up := strings.TrimPrefix(freePort(t), "127.0.0.1:") // nobody listens yet: the outage
	hub := "  hostname: localhost\n  routes:\n    up:\n      route: FROM /messages/* INTO $upstream\n" +
		"  upstream:\n    mode: mqtt\n    url: tcp://127.0.0.1:" + up + "\n    clientId: k9-up\n    topicTemplate: k9up/{deviceId}\n"
	conf := k9Config(t, "127.0.0.1:0", freePort(t), hub)
	k := &k9Ledge{t: t, conf: conf, env: []string{"LEDGE_RUNTIME_DIR=" + t.TempDir()}}
	k.start()
	cs := regexp.MustCompile(`HostName=\S+`).FindString(k.cli("identity", "add", "thermo"))
	thermo := testenv.StartSDK(t, "thermo", testenv.SDKEnv{Kind: "device", CS: cs, CA: filepath.Join(filepath.Dir(conf), "ledge-data", "hub", "ca.pem")})
	thermo.Must("open", nil)
	thermo.Must("send", map[string]any{"body": "tele-k9"})
	k.kill9()
	k.start()

	mosquitto := exec.Command(testenv.Command(t, "mosquitto", "mosquitto"), "-p", up)
	if err := mosquitto.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mosquitto.Process.Kill(); mosquitto.Wait() })
	// ledge reconnects with a back-off of 1 s at least: the subscriber is
	// there first.
	var out string
	for range 50 {
		o, err := exec.CommandContext(t.Context(), testenv.Command(t, "mosquitto_sub", "mosquitto-clients"),
			"-h", "127.0.0.1", "-p", up, "-t", "k9up/#", "-C", "1", "-W", "60").Output()
		if err == nil {
			out = string(o)
			break
		}
		time.Sleep(20 * time.Millisecond) // mosquitto not listening yet
	}
	if got := strings.TrimSpace(out); got != "tele-k9" {
		t.Errorf("upstream got %q, want the telemetry acknowledged before kill -9", got)
	}
}

// TestKill9CleanStartEndsSession: a clean start (MQTT 5 Clean Start 1 with
// paho.golang, MQTT 3.1.1 clean session 1 with mosquitto_sub) ends the
// client's persistent session, and the CONNACK says so only once the
// session's removal is committed: ledge killed -9 right after that
// CONNACK and restarted, the client coming back with clean start 0 finds
// no session (session present 0) and gets none of the messages queued
// for the old one. Commits are held back 300 ms (killWindowBin); the
// CONNACK used to be sent before the removal was even queued.
func TestKill9CleanStartEndsSession(t *testing.T) {
	port := strings.TrimPrefix(freePort(t), "127.0.0.1:")
	k := &k9Ledge{t: t, bin: killWindowBin(t), conf: k9Config(t, "127.0.0.1:"+port, "127.0.0.1:0", ""),
		env: []string{"LEDGE_RUNTIME_DIR=" + t.TempDir(), "LEDGE_HUB_COMMIT_DELAY=300ms"}, args: []string{"--dev"}}
	k.start()
	expiry := uint32(3600)
	connect := func(id string, clean bool, got chan<- string) (*paho.Client, *paho.Connack) {
		t.Helper()
		conn, err := net.Dial("tcp", "127.0.0.1:"+port)
		if err != nil {
			t.Fatal(err)
		}
		c := paho.NewClient(paho.ClientConfig{Conn: conn, OnClientError: func(error) {}, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(p paho.PublishReceived) (bool, error) {
				if got != nil {
					got <- p.Packet.Topic + " " + string(p.Packet.Payload)
				}
				return true, nil
			}}})
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		ca, err := c.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: clean,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
		if err != nil {
			t.Fatalf("paho connect %s: %v", id, err)
		}
		return c, ca
	}

	// Two persistent sessions, each with a subscription and a QoS 1
	// message queued while its client is away.
	mosq(t, "mosquitto_sub", port, "-V", "mqttv5", "-x", "3600", "-c", "-q", "1", "-i", "k9-clean5", "-t", "k9/c5", "-E")
	mosq(t, "mosquitto_sub", port, "-c", "-q", "1", "-i", "k9-clean3", "-t", "k9/c3", "-E")
	mosq(t, "mosquitto_pub", port, "-q", "1", "-t", "k9/c5", "-m", "old5")
	mosq(t, "mosquitto_pub", port, "-q", "1", "-t", "k9/c3", "-m", "old3")

	// MQTT 5 Clean Start 1 (the new session persistent too), killed as
	// the CONNACK arrives.
	_, ca := connect("k9-clean5", true, nil)
	if ca.SessionPresent {
		t.Errorf("a clean start got session present 1")
	}
	k.kill9()
	k.start()
	got := make(chan string, 10)
	c, ca := connect("k9-clean5", false, got)
	if ca.SessionPresent {
		t.Errorf("after a clean start, kill -9 and a restart the MQTT 5 session came back: session present 1")
	}
	select {
	case m := <-got:
		t.Errorf("after a clean start, kill -9 and a restart the MQTT 5 client got %q from its old session", m)
	case <-time.After(2 * time.Second):
	}
	c.Disconnect(&paho.Disconnect{})

	// MQTT 3.1.1 clean session 1 (mosquitto_sub without -c: it
	// subscribes elsewhere and leaves at the SUBACK), then kill -9.
	mosq(t, "mosquitto_sub", port, "-q", "1", "-i", "k9-clean3", "-t", "k9/other", "-E")
	k.kill9()
	k.start()
	// Were the session back, its queued old3 would come within 3 s.
	bin := testenv.Command(t, "mosquitto_sub", "mosquitto-clients")
	out, _ := exec.CommandContext(t.Context(), bin, "-h", "127.0.0.1", "-p", port, "-c", "-q", "1", "-i", "k9-clean3",
		"-t", "k9/none", "-v", "-W", "3").Output()
	if strings.Contains(string(out), "old3") {
		t.Errorf("after a 3.1.1 clean session, kill -9 and a restart the client got its old session's message: %q", out)
	}
	// And its old subscription is gone: a new message on k9/c3 is not
	// queued for it.
	mosq(t, "mosquitto_pub", port, "-q", "1", "-t", "k9/c3", "-m", "new3")
	out, _ = exec.CommandContext(t.Context(), bin, "-h", "127.0.0.1", "-p", port, "-c", "-q", "1", "-i", "k9-clean3",
		"-t", "k9/none", "-v", "-W", "3").Output()
	if strings.Contains(string(out), "k9/c3") {
		t.Errorf("after a 3.1.1 clean session, kill -9 and a restart the old subscription k9/c3 is back: %q", out)
	}
}
