package main

import (
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"ledge/internal/testenv"
)

// TestFleetDevicesEscapeTerminalControls: what a device publishes (its
// state document: tags, the reason of a failed deployment) is printed by
// `ledge fleet devices` and `status` on the operator's terminal. Control
// characters in it were printed as they came: ESC [1A ESC [2K erased the
// line before (a failed device could hide itself and print "all good"),
// ESC ]0; set the window title. The CLI shows them escaped (\x1b), as Go
// quotes them; newlines and tabs stay.
func TestFleetDevicesEscapeTerminalControls(t *testing.T) {
	dir := t.TempDir()
	ledge(t, "keys", "gen", "--out", filepath.Join(dir, "fleet"))
	b := startBroker(t)
	env := []string{"LEDGE_FLEET_BROKER=tcp://" + b.addr, "LEDGE_FLEET_USERNAME=fleet", "LEDGE_FLEET_PASSWORD=fleet-pw",
		"LEDGE_FLEET_KEY=" + filepath.Join(dir, "fleet.key")}
	pub := testenv.Command(t, "mosquitto_pub", "mosquitto-clients")
	host, port, _ := net.SplitHostPort(b.addr)
	state := "{\"deviceId\":\"dev-1\",\"tags\":{\"site\":\"x\\u001b]0;owned\\u0007\"},\"properties\":{\"reported\":{\"deployment\":" +
		"{\"version\":\"1\",\"state\":\"failed\",\"reason\":\"boom\\u001b[1A\\u001b[2K\\r\\u009ball good\"}}},\"at\":\"2026-01-02T03:04:05Z\"}"
	if out, err := exec.Command(pub, "-h", host, "-p", port, "-u", "fleet", "-P", "fleet-pw", "-r", "-q", "1", "-t", "ledge/dev-1/state",
		"-m", state).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v %s", err, out)
	}
	out, errOut, code := ledgeIn(t, "", env, "fleet", "devices")
	if code != 0 || !strings.Contains(out, "dev-1") {
		t.Fatalf("fleet devices: exit %d\n%s%s", code, out, errOut)
	}
	for _, c := range []string{"\x1b", "\x07", "\r", "\u009b"} {
		if strings.Contains(out+errOut, c) {
			t.Errorf("fleet devices printed the device's control character %q:\n%q", c, out)
		}
	}
	if !strings.Contains(out, `boom\x1b[1A\x1b[2K\r\u009ball good`) || !strings.Contains(out, `site=x\x1b]0;owned\a`) {
		t.Errorf("fleet devices: want the device's text with its controls escaped, got\n%s", out)
	}
	if !strings.Contains(out, "\n") || !strings.Contains(out, "ID ") {
		t.Errorf("fleet devices: the table itself is gone:\n%s", out)
	}
}
