package main

import (
	"strings"
	"testing"
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
