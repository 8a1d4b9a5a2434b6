package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"ledge/hub/azure"
	"ledge/internal/testenv"
)

// TestHubCLI drives ledge identity, twin, method and c2d against a running
// daemon over its socket.
func TestHubCLI(t *testing.T) {
	dataDir := t.TempDir()
	startLedge(t, "--data-dir", dataDir)
	dd := []string{"--data-dir", dataDir}
	run := func(args ...string) (string, string, int) { return ledge(t, append(args, dd...)...) }

	out, errOut, code := run("identity", "add", "thermo")
	if code != 0 || !strings.HasPrefix(out, "HostName=") || !strings.Contains(out, ";DeviceId=thermo;SharedAccessKey=") {
		t.Fatalf("identity add: %d %q %q", code, out, errOut)
	}
	if _, _, code := run("identity", "add", "thermo"); code == 0 {
		t.Error("adding an identity twice succeeded")
	}
	out, _, code = run("identity", "add", "edge/cam")
	if code != 0 || !strings.Contains(out, ";ModuleId=cam;SharedAccessKey=") {
		t.Errorf("module identity: %d %q", code, out)
	}
	out, _, code = run("identity", "add", "sensor", "--kind", "user", "--password", "pw1")
	if code != 0 || !strings.Contains(out, "username: sensor") {
		t.Errorf("user identity: %d %q", code, out)
	}
	out, _, code = run("identity", "list")
	if code != 0 || !strings.Contains(out, "thermo") || !strings.Contains(out, "edge/cam") || strings.Contains(out, "SharedAccessKey") {
		t.Errorf("identity list (must not show keys): %q", out)
	}
	out, _, code = run("identity", "show", "edge/cam")
	if code != 0 || !strings.Contains(out, ";ModuleId=cam;") || !strings.Contains(out, "primaryKey: ") {
		t.Errorf("identity show: %q", out)
	}

	out, errOut, code = run("twin", "patch", "thermo", `{"interval":5}`)
	if code != 0 || !strings.Contains(out, `"interval": 5`) {
		t.Errorf("twin patch: %d %q %q", code, out, errOut)
	}
	out, _, code = run("twin", "get", "thermo")
	if code != 0 || !strings.Contains(out, `"desiredVersion": 1`) {
		t.Errorf("twin get: %q", out)
	}

	_, errOut, code = run("method", "invoke", "thermo", "reboot", `{}`, "--timeout", "2s")
	if code == 0 || !strings.Contains(errOut, "404 not connected") {
		t.Errorf("method to a disconnected device: %d %q", code, errOut)
	}
	_, errOut, code = run("c2d", "send", "thermo", `{"a":1}`)
	if code == 0 || !strings.Contains(errOut, "404 not connected") {
		t.Errorf("c2d to a disconnected device: %d %q", code, errOut)
	}
	out, _, code = run("identity", "remove", "thermo")
	if code != 0 {
		t.Errorf("identity remove: %d %q", code, out)
	}
	if _, errOut, code = run("identity", "show", "thermo"); code == 0 || !strings.Contains(errOut, "does not exist") {
		t.Errorf("show after remove: %d %q", code, errOut)
	}
}

// TestHubCLIMethods: a device connected with paho answers one method and
// ignores another; the CLI prints the answer, then exits non-zero saying
// 504 timeout.
func TestHubCLIMethods(t *testing.T) {
	dataDir := t.TempDir()
	startLedge(t, "--data-dir", dataDir)
	dd := []string{"--data-dir", dataDir}
	run := func(args ...string) (string, string, int) { return ledge(t, append(args, dd...)...) }
	out, _, code := run("identity", "add", "dev1")
	if code != 0 {
		t.Fatal(out)
	}
	cs := parseConnString(strings.TrimSpace(strings.Split(out, "\n")[0]))
	status, _, _ := run("hub", "--json")
	var st struct {
		Hostname string
		Ports    struct{ MQTT int }
	}
	if err := json.Unmarshal([]byte(status), &st); err != nil || st.Ports.MQTT == 0 {
		t.Fatalf("ledge hub: %v %q", err, status)
	}
	tok, err := azure.BuildToken(azure.Resource(cs["HostName"], "dev1", ""), cs["SharedAccessKey"], time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	o := paho.NewClientOptions().AddBroker(fmt.Sprintf("tcp://127.0.0.1:%d", st.Ports.MQTT)).SetClientID("dev1").
		SetUsername(cs["HostName"] + "/dev1/?api-version=2021-04-12").SetPassword(tok).SetAutoReconnect(false)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("device connect: %v", tok.Error())
	}
	defer c.Disconnect(10)
	c.Subscribe("$iothub/methods/POST/#", 0, func(c paho.Client, m paho.Message) {
		if strings.HasPrefix(m.Topic(), "$iothub/methods/POST/ping/") {
			rid := m.Topic()[strings.Index(m.Topic(), "$rid=")+5:]
			c.Publish("$iothub/methods/res/200/?$rid="+rid, 0, false, `{"pong":true}`)
		}
	}).Wait()
	out, errOut, code := run("method", "invoke", "dev1", "ping", `{}`)
	if code != 0 || !strings.Contains(out, "status 200") || !strings.Contains(out, `{"pong":true}`) {
		t.Errorf("method ping: %d %q %q", code, out, errOut)
	}
	_, errOut, code = run("method", "invoke", "dev1", "ignored", `{}`, "--timeout", "1s")
	if code == 0 || !strings.Contains(errOut, "504 timeout") {
		t.Errorf("unanswered method: %d %q", code, errOut)
	}
}

func parseConnString(s string) map[string]string {
	m := map[string]string{}
	for _, kv := range strings.Split(s, ";") {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

// TestIdentityToken: `ledge identity token` makes a SAS token that
// mosquitto_pub connects with over TLS, with the username the command
// prints; the connection string names the gateway with its port.
func TestIdentityToken(t *testing.T) {
	pub := testenv.Command(t, "mosquitto_pub", "mosquitto-clients")
	dataDir := t.TempDir()
	startLedge(t, "--data-dir", dataDir)
	dd := []string{"--data-dir", dataDir}
	run := func(args ...string) (string, string, int) { return ledge(t, append(args, dd...)...) }
	out, _, code := run("identity", "add", "tok1")
	if code != 0 {
		t.Fatal(out)
	}
	status, _, _ := run("hub", "--json")
	var st struct {
		Hostname string
		Ports    struct{ MQTTS int }
	}
	if err := json.Unmarshal([]byte(status), &st); err != nil || st.Ports.MQTTS == 0 {
		t.Fatalf("ledge hub: %v %q", err, status)
	}
	cs := parseConnString(strings.TrimSpace(strings.Split(out, "\n")[0]))
	if want := fmt.Sprintf("%s:%d", st.Hostname, st.Ports.MQTTS); cs["GatewayHostName"] != want {
		t.Errorf("GatewayHostName %q, want %q", cs["GatewayHostName"], want)
	}
	tok, errOut, code := run("identity", "token", "tok1", "--ttl", "5m")
	if code != 0 || !strings.HasPrefix(tok, "SharedAccessSignature sr=") {
		t.Fatalf("identity token: %d %q %q", code, tok, errOut)
	}
	// The example line is one to paste: the CA file is this ledge's.
	if want := "--cafile '" + filepath.Join(dataDir, "hub", "ca.pem") + "'"; !strings.Contains(errOut, want) {
		t.Errorf("identity token's example does not name the CA file (%s):\n%s", want, errOut)
	}
	user := ""
	for _, l := range strings.Split(errOut, "\n") {
		if u, ok := strings.CutPrefix(l, "username:"); ok {
			user = strings.TrimSpace(u)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, pub, "-h", "localhost", "-p", fmt.Sprint(st.Ports.MQTTS), "--cafile", filepath.Join(dataDir, "hub", "ca.pem"),
		"-i", "tok1", "-u", user, "-P", strings.TrimSpace(tok), "-q", "1", "-t", "devices/tok1/messages/events/", "-m", "hi")
	if b, err := c.CombinedOutput(); err != nil {
		t.Errorf("mosquitto_pub with the token: %v %s (username %q)", err, b, user)
	}
	run("identity", "add", "plainuser", "--kind", "user", "--password", "pw")
	if _, errOut, code := run("identity", "token", "plainuser"); code == 0 || !strings.Contains(errOut, "no keys") {
		t.Errorf("token for a user identity: %d %q", code, errOut)
	}
}
