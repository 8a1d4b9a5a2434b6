package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFleetCLIErrorsNameTheFix (outside-in audit of issue 14): what an
// operator gets wrong on the command line is said before the broker is
// asked, naming the flag (`ledge fleet deploy x` without its FILE waited
// for the broker, and with the broker down said only "no connection
// within 15s"; a bad --waves was "rollout.waves[1]"); a broker that
// turns the credentials down says so and where they come from (it said
// "no connection within 15s").
func TestFleetCLIErrorsNameTheFix(t *testing.T) {
	dir := t.TempDir()
	ledge(t, "keys", "gen", "--out", filepath.Join(dir, "fleet"))
	manifest := filepath.Join(dir, "m.yaml")
	os.WriteFile(manifest, []byte("version: \"1\"\nmodules:\n  app:\n    image: x/app:1\n"), 0o644)
	invalid := filepath.Join(dir, "bad.yaml")
	os.WriteFile(invalid, []byte("version: \"1\"\nmodules:\n  app:\n    imagee: x/app:1\n"), 0o644)
	// No broker listens there: what is wrong on the command line must be
	// said without one.
	down := []string{"LEDGE_FLEET_BROKER=tcp://" + freePort(t), "LEDGE_FLEET_KEY=" + filepath.Join(dir, "fleet.key")}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"deploy", "people"}, "usage: ledge fleet deploy NAME FILE"},
		{[]string{"deploy", "people", manifest}, "--target is required"},
		{[]string{"deploy", "people", filepath.Join(dir, "none.yaml"), "--target", "true"}, "none.yaml"},
		{[]string{"deploy", "people", invalid, "--target", "true"}, `unknown key "imagee"`},
		{[]string{"deploy", "people", manifest, "--target", "tags.site == 'x'"}, "--target: at offset 11"},
		{[]string{"deploy", "people", manifest, "--target", "true", "--waves", "50%,10%"}, `--waves: waves are cumulative: "10%" is below the wave before`},
		{[]string{"deploy", "people", manifest, "--target", "true", "--waves", "0"}, `--waves: "0": want a count`},
		{[]string{"deploy", "people", manifest, "--target", "true", "--abort-after", "abc"}, `--abort-after: "abc"`},
		{[]string{"deploy", "people", manifest, "--target", "true", "--priority", "-1"}, "--priority: must not be negative"},
		{[]string{"deploy", "a/b", manifest, "--target", "true"}, `NAME "a/b"`},
		{[]string{"status"}, "usage: ledge fleet status NAME"},
		{[]string{"pause", "a", "b"}, "usage: ledge fleet pause NAME"},
		{[]string{"devices", "--where", "tags.site == 'x'"}, "--where: at offset 11"},
	} {
		_, errOut, code := ledgeIn(t, "", down, append([]string{"fleet"}, c.args...)...)
		if code == 0 || !strings.Contains(errOut, c.want) || strings.Contains(errOut, "broker") {
			t.Errorf("ledge fleet %s: exit %d, stderr %q: want %q, said before the broker is asked", strings.Join(c.args, " "), code, errOut, c.want)
		}
	}

	b := startBroker(t)
	env := []string{"LEDGE_FLEET_BROKER=tcp://" + b.addr, "LEDGE_FLEET_USERNAME=fleet", "LEDGE_FLEET_PASSWORD=wrong",
		"LEDGE_FLEET_KEY=" + filepath.Join(dir, "fleet.key")}
	_, errOut, code := ledgeIn(t, "", env, "fleet", "devices")
	if code == 0 || !strings.Contains(errOut, "not Authorized") || !strings.Contains(errOut, "LEDGE_FLEET_PASSWORD") {
		t.Errorf("ledge fleet devices with a wrong password: exit %d, stderr %q: want the broker's refusal and where the password comes from", code, errOut)
	}
}
