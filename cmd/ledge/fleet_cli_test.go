package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ledge/internal/testenv"
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
		{[]string{"status", "a", "b"}, "usage: ledge fleet status [NAME]"},
		{[]string{"pause", "a", "b"}, "usage: ledge fleet pause NAME"},
		{[]string{"delete"}, "usage: ledge fleet delete NAME"},
		{[]string{"devices", "--where", "tags.site == 'x'"}, "--where: at offset 11"},
		{[]string{"controller", "start"}, "usage: ledge fleet controller [flags]"},
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

	// A condition that matches no device says what usually makes that:
	// a tag compared to a number, a text without quotes.
	env = env[:len(env)-2]
	env = append(env, "LEDGE_FLEET_PASSWORD=fleet-pw", "LEDGE_FLEET_KEY="+filepath.Join(dir, "fleet.key"))
	pub := testenv.Command(t, "mosquitto_pub", "mosquitto-clients")
	host, port, _ := net.SplitHostPort(b.addr)
	if out, err := exec.Command(pub, "-h", host, "-p", port, "-u", "fleet", "-P", "fleet-pw", "-r", "-q", "1", "-t", "ledge/dev-1/state",
		"-m", `{"deviceId":"dev-1","tags":{"line":"3","site":"berlin"},"properties":{"reported":{}},"at":"2026-01-02T03:04:05Z"}`).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v %s", err, out)
	}
	out, errOut, code := ledgeIn(t, "", env, "fleet", "devices", "--where", "tags.line = 3")
	if code != 0 || !strings.Contains(out, "0 devices") || !strings.Contains(errOut, "tags.line = '3', not 3") {
		t.Errorf("devices --where tags.line = 3: exit %d\n%s%s\nwant 0 devices and the note on tags as strings", code, out, errOut)
	}
	out, errOut, code = ledgeIn(t, "", env, "fleet", "devices", "--where", "tags.line = '3'")
	if code != 0 || !strings.Contains(out, "1 devices") || errOut != "" {
		t.Errorf("devices --where tags.line = '3': exit %d\n%s%s\nwant dev-1 and no note", code, out, errOut)
	}
	out, errOut, code = ledgeIn(t, "", env, "fleet", "deploy", "people", manifest, "--target", "tags.site = berlin")
	if code != 0 || !strings.Contains(out, "matches 0 devices") || !strings.Contains(errOut, "not berlin") {
		t.Errorf("deploy --target tags.site = berlin: exit %d\n%s%s\nwant it published, with the note on texts without quotes", code, out, errOut)
	}
	// An unknown deployment's error names those there are; status without
	// a name lists them.
	_, errOut, _ = ledgeIn(t, "", env, "fleet", "status", "peeple")
	if !strings.Contains(errOut, `no fleet deployment "peeple"`) || !strings.Contains(errOut, "people") {
		t.Errorf("status peeple: %q, want the deployments there are", errOut)
	}
	out, errOut, code = ledgeIn(t, "", env, "fleet", "status")
	if code != 0 || !strings.Contains(out, "NAME") || !strings.Contains(out, "people") || !strings.Contains(out, "waiting for a controller") {
		t.Errorf("status: exit %d\n%s%s\nwant a table of the deployments", code, out, errOut)
	}

	// A deployment signed with another key than the one the deployments
	// there are were signed with: published (the CLI cannot know the
	// controllers' key), with a note that the controller may refuse it.
	ledge(t, "keys", "gen", "--out", filepath.Join(dir, "other"))
	other := append(env[:len(env):len(env)], "LEDGE_FLEET_KEY="+filepath.Join(dir, "other.key"))
	out, errOut, code = ledgeIn(t, "", other, "fleet", "deploy", "rogue", manifest, "--target", "true")
	if code != 0 || !strings.Contains(errOut, "none of the 1 deployments on the broker verifies with this key") {
		t.Errorf("deploy with another key: exit %d\n%s%s\nwant a note that the others are signed with another key", code, out, errOut)
	}

	// A deployment a higher priority outranks on some of the devices its
	// target matches says so.
	if out, errOut, code := ledgeIn(t, "", env, "fleet", "deploy", "high", manifest, "--target", "true", "--priority", "50"); code != 0 {
		t.Fatalf("deploy high: %s%s", out, errOut)
	}
	out, errOut, code = ledgeIn(t, "", env, "fleet", "deploy", "low", manifest, "--target", "true", "--priority", "1")
	if code != 0 || !strings.Contains(out, "matches 1 devices now, 1 of them held by a higher priority (high)") {
		t.Errorf("deploy low: exit %d\n%s%s\nwant it to say high outranks it on the device", code, out, errOut)
	}

	// --json, which every fleet command takes, prints JSON.
	out, errOut, code = ledgeIn(t, "", env, "fleet", "deploy", "people", manifest, "--target", "tags.site = 'berlin'", "--json")
	var dep struct {
		Name       string `json:"name"`
		Generation int64  `json:"generation"`
		Matches    int    `json:"matches"`
	}
	if err := json.Unmarshal([]byte(out), &dep); code != 0 || err != nil || dep.Name != "people" || dep.Generation != 2 || dep.Matches != 1 {
		t.Errorf("deploy --json: exit %d, %v\n%s%s", code, err, out, errOut)
	}
	out, errOut, code = ledgeIn(t, "", env, "fleet", "pause", "people", "--json")
	var st struct {
		Name, State string
		Generation  int64
	}
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil || st.State != "paused" || st.Generation != 3 {
		t.Errorf("pause --json: exit %d, %v\n%s%s", code, err, out, errOut)
	}

	// A deployment no controller acted on yet (no rollout record) is
	// deleted one generation above its definition, and is gone.
	out, errOut, code = ledgeIn(t, "", env, "fleet", "delete", "low", "--json")
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil || st.State != "deleted" || st.Generation != 2 {
		t.Errorf("delete low --json: exit %d, %v\n%s%s\nwant deleted at generation 2", code, err, out, errOut)
	}
	out, errOut, code = ledgeIn(t, "", env, "fleet", "status")
	if code != 0 || strings.Contains(out, "\nlow ") || !strings.Contains(out, "\nhigh ") {
		t.Errorf("status after delete low: exit %d\n%s%s\nwant low gone", code, out, errOut)
	}
	out, errOut, code = ledgeIn(t, "", env, "fleet", "deploy", "low", manifest, "--target", "true", "--json")
	if err := json.Unmarshal([]byte(out), &dep); code != 0 || err != nil || dep.Generation != 3 {
		t.Errorf("deploy low again --json: exit %d, %v\n%s%s\nwant generation 3", code, err, out, errOut)
	}
}

// TestFleetControllerWrongKey (outside-in audit of issue 14): a
// controller started with a key that is not the fleet's (a new host, a
// fresh `ledge keys gen`) refused every deployment on the broker, took
// the lease anyway and overwrote the devices' assignment records with
// manifests signed by its key, which every device refused: the rollouts
// stalled until it was stopped. It now refuses to start when none of
// the deployments on the broker verifies with its keys, saying so.
func TestFleetControllerWrongKey(t *testing.T) {
	dir := t.TempDir()
	ledge(t, "keys", "gen", "--out", filepath.Join(dir, "fleet"))
	ledge(t, "keys", "gen", "--out", filepath.Join(dir, "other"))
	manifest := filepath.Join(dir, "m.yaml")
	os.WriteFile(manifest, []byte("version: \"1\"\nmodules:\n  app:\n    image: x/app:1\n"), 0o644)
	b := startBroker(t)
	env := []string{"LEDGE_FLEET_BROKER=tcp://" + b.addr, "LEDGE_FLEET_USERNAME=fleet", "LEDGE_FLEET_PASSWORD=fleet-pw"}
	if out, errOut, code := ledgeIn(t, "", append(env, "LEDGE_FLEET_KEY="+filepath.Join(dir, "fleet.key")), "fleet", "deploy", "people", manifest, "--target", "true"); code != 0 {
		t.Fatalf("deploy: %s%s", out, errOut)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, ledgeBin, "fleet", "controller")
	cmd.Env = append(append(os.Environ(), env...), "LEDGE_FLEET_KEY="+filepath.Join(dir, "other.key"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	errOut, code := stderr.String(), cmd.ProcessState.ExitCode()
	if ctx.Err() != nil {
		t.Fatalf("a controller with another key runs (%v):\n%s", err, errOut)
	}
	if code == 0 || !strings.Contains(errOut, "none of the 1 deployments on the broker verifies") || strings.Contains(errOut, "fleet lease acquired") {
		t.Fatalf("a controller with another key: exit %d\n%s\nwant it to refuse to start, naming why", code, errOut)
	}
}
