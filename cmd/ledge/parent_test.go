package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ledge/agent"
)

// TestTwinSetModules: on a ledge that is a parent, `ledge identity add
// --parent` registers a device behind a child, and `ledge twin
// set-modules CHILD FILE --key KEY` writes an Azure manifest into the
// child's twins there (each twin's desired replaced, module twins too),
// with the signature of the deployment they make in $ledge: the same one
// the child verifies (agent.TwinManifest over the twins as read back).
func TestTwinSetModules(t *testing.T) {
	dataDir := t.TempDir()
	dir := t.TempDir()
	startLedge(t, "--data-dir", dataDir)
	run := func(args ...string) (string, string, int) { return ledge(t, append(args, "--data-dir", dataDir)...) }
	if out, errOut, code := run("identity", "add", "child"); code != 0 {
		t.Fatalf("identity add: %d %s %s", code, out, errOut)
	}
	if out, errOut, code := run("identity", "add", "leaf", "--parent", "child"); code != 0 || !strings.Contains(out+errOut, "leaf") {
		t.Fatalf("identity add --parent: %d %s %s", code, out, errOut)
	}
	if _, errOut, code := run("identity", "add", "lost", "--parent", "nobody"); code == 0 || !strings.Contains(errOut, `parent "nobody" is not a device`) {
		t.Errorf("a parent that does not exist: %d %s", code, errOut)
	}
	if _, _, code := ledge(t, "keys", "gen", "--out", filepath.Join(dir, "ops")); code != 0 {
		t.Fatal("keys gen")
	}
	manifest := filepath.Join(dir, "deployment.json")
	os.WriteFile(manifest, []byte(`{"modulesContent": {
  "$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "runtime": {"type": "docker"},
    "modules": {"cam": {"type": "docker", "settings": {"image": "cam:1"}}}}},
  "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {"up": "FROM /messages/* INTO $upstream"}}},
  "$ledge": {"properties.desired": {"version": "4"}},
  "cam": {"properties.desired": {"fps": 5}}}}`), 0o644)
	// An old key that the new deployment no longer has is removed.
	run("twin", "patch", "child/$edgeAgent", `{"stale": true}`)
	out, errOut, code := run("twin", "set-modules", "child", manifest, "--key", filepath.Join(dir, "ops.key"))
	if code != 0 || strings.Index(out, "set child/cam") > strings.Index(out, "set child/$edgeAgent") {
		t.Fatalf("set-modules: %d\n%s%s", code, out, errOut)
	}
	desired := map[string]json.RawMessage{}
	for _, id := range []string{"$edgeAgent", "$edgeHub", "$ledge", "cam"} {
		out, errOut, code := run("twin", "get", "child/"+id)
		var tw struct{ Desired json.RawMessage }
		if code != 0 || json.Unmarshal([]byte(out), &tw) != nil {
			t.Fatalf("twin get child/%s: %d %s %s", id, code, out, errOut)
		}
		desired[id] = tw.Desired
	}
	if strings.Contains(string(desired["$edgeAgent"]), "stale") || !strings.Contains(string(desired["cam"]), `"fps": 5`) {
		t.Errorf("twins: %s / %s", desired["$edgeAgent"], desired["cam"])
	}
	data, sig, _, err := agent.TwinManifest(desired)
	if err != nil || sig == nil {
		t.Fatalf("twin manifest: %v, signature %v", err, sig)
	}
	pub, _ := os.ReadFile(filepath.Join(dir, "ops.pub"))
	keys, err := agent.ParseTrustedKeys([]string{string(pub)})
	if err != nil {
		t.Fatal(err)
	}
	if signer, err := agent.Verify(keys, data, sig); err != nil || signer == "" {
		t.Errorf("the $ledge signature does not verify over the twins' deployment: %v\n%s", err, data)
	}
}

// TestDeployCheckWarnings: `deploy check` prints each key edgeAgent
// ignores as a warning with its line, path and a "did you mean", and
// accepts the manifest; what $upstream resolves to is in the plan.
func TestDeployCheckWarnings(t *testing.T) {
	dir := t.TempDir()
	m := filepath.Join(dir, "azure.json")
	os.WriteFile(m, []byte(`{"modulesContent": {"$edgeAgent": {"properties.desired": {"schemaVersion": "1.1",
  "runtime": {"type": "docker", "settings": {"minDockerVersoin": "v1.25"}},
  "modules": {"sensor": {"type": "docker", "ServiceClientConnectionString": "HostName=x",
    "settings": {"image": "$upstream:443/azureiotedge-simulated-temperature-sensor:1.5",
      "createOptions": "{\"HostConfig\":{\"Memory\":\"71000000\",\"Privilegd\":true,},}"}}}}}}}`), 0o644)
	conf := filepath.Join(dir, "ledge.yaml")
	os.WriteFile(conf, []byte("hub:\n  upstream: {mode: azure, host: parent.example, deviceKey: a2V5LQ==}\n"), 0o644)
	out, errOut, code := ledge(t, "deploy", "check", "--offline", "--config", conf, m)
	if code != 0 {
		t.Fatalf("check: %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		`warning: line 2, column 46 (byte 127): modulesContent.$edgeAgent."properties.desired".runtime.settings.minDockerVersoin: unknown key, ignored as edgeAgent ignores it (did you mean "minDockerVersion"?)`,
		`modules.sensor.ServiceClientConnectionString: unknown key, ignored as edgeAgent ignores it`,
		`settings.createOptions: HostConfig.Privilegd: not a field of Docker's ContainerCreate body`, `did you mean "Privileged"?`,
		`create  module  sensor  parent.example:443/azureiotedge-simulated-temperature-sensor:1.5`, `$upstream is parent.example (the host of hub.upstream)`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
}

// TestDeployCheckStockNotes: a stock Azure manifest (system modules, an
// mqttBroker section, no ledge version) is checked with notes on how
// ledge reads those parts and not one "warning:" line.
func TestDeployCheckStockNotes(t *testing.T) {
	dir := t.TempDir()
	m := filepath.Join(dir, "azure.json")
	os.WriteFile(m, []byte(`{"modulesContent": {"$edgeAgent": {"properties.desired": {"schemaVersion": "1.1",
  "runtime": {"type": "docker", "settings": {"minDockerVersion": "v1.25", "loggingOptions": ""}},
  "systemModules": {"edgeAgent": {"type": "docker", "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.5", "createOptions": "{}"}},
    "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always", "settings": {"image": "mcr.microsoft.com/azureiotedge-hub:1.5", "createOptions": "{}"}}},
  "modules": {"tempSensor": {"version": "1.0", "type": "docker", "status": "running", "restartPolicy": "always",
    "settings": {"image": "mcr.microsoft.com/azureiotedge-simulated-temperature-sensor:1.5", "createOptions": "{}"}}}}},
 "$edgeHub": {"properties.desired": {"schemaVersion": "1.2", "routes": {"up": "FROM /messages/* INTO $upstream"},
  "storeAndForwardConfiguration": {"timeToLiveSecs": 7200},
  "mqttBroker": {"authorizations": [{"identities": ["{{iot:identity}}"], "allow": [{"operations": ["mqtt:connect"]}]}]}}}}}`), 0o644)
	conf := filepath.Join(dir, "ledge.yaml")
	os.WriteFile(conf, []byte("dataDir: "+dir+"\n"), 0o644)
	out, errOut, code := ledge(t, "deploy", "check", "--offline", "--config", conf, m)
	if code != 0 {
		t.Fatalf("check: %d\n%s%s", code, out, errOut)
	}
	if strings.Contains(out+errOut, "warning:") {
		t.Errorf("warnings on a stock manifest:\n%s%s", out, errOut)
	}
	for _, want := range []string{"note: systemModules (edgeAgent, edgeHub) are not run", "note: $edgeHub mqttBroker is ignored", "create  module"} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
}
