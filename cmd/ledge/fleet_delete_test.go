package main

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"ledge/hub/fleet"
	"ledge/internal/testenv"
)

// TestFleetDelete: `ledge fleet delete NAME` with Azure's semantics, on
// real appliances behind a real mosquitto. Of three appliances given
// "top", the two that "base" targets take it on at once and the third,
// which no other deployment targets, keeps running top (it takes
// nothing); top is gone from `fleet status`, `fleet devices` says the
// third runs a deleted deployment, its rollout record is a deleted one;
// an unknown name is refused naming those there are; the definition's
// old signed bytes re-published with mosquitto_pub do not bring it back,
// not even to a controller started after it; and `fleet deploy top`
// makes it again.
func TestFleetDelete(t *testing.T) {
	testenv.Docker(t)
	sub := testenv.Command(t, "mosquitto_sub", "mosquitto-clients")
	pub := testenv.Command(t, "mosquitto_pub", "mosquitto-clients")
	b := startBroker(t)
	img := testImage(t, "fleetdel-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	f := newFleet(t, 3, []string{"tcp://" + b.addr}, func(i int) string {
		if i < 2 {
			return "group: a"
		}
		return "group: b"
	})
	waitFor(t, 30*time.Second, "3 devices online", func() bool {
		online := 0
		for _, r := range f.devicesJSON() {
			if r.Online && r.Tags["group"] != "" {
				online++
			}
		}
		return online == 3
	})
	ctl := f.startController()
	dumpOnFail = func() {
		out, errOut, _ := ledgeIn(t, "", f.env(), "fleet", "devices")
		t.Logf("devices:\n%s%s", out, errOut)
		out, errOut, _ = ledgeIn(t, "", f.env(), "fleet", "status")
		t.Logf("status:\n%s%s", out, errOut)
		t.Logf("controller:\n%s", tail(ctl.stderr.String(), 3000))
	}
	t.Cleanup(func() { dumpOnFail = nil })
	host, port, _ := net.SplitHostPort(b.addr)
	retained := func(topic string) []byte {
		t.Helper()
		out, err := exec.Command(sub, "-h", host, "-p", port, "-u", "fleet", "-P", "fleet-pw", "-t", topic, "-C", "1", "-W", "5").Output()
		if err != nil {
			t.Fatalf("mosquitto_sub %s: %v", topic, err)
		}
		return []byte(strings.TrimSuffix(string(out), "\n"))
	}
	rows := func() map[string]fleet.DeviceRow {
		m := map[string]fleet.DeviceRow{}
		for _, r := range f.devicesJSON() {
			m[r.ID] = r
		}
		return m
	}
	on := func(r fleet.DeviceRow, name string) bool {
		return r.Deployment == name && r.State == "converged" && strings.HasSuffix(r.Version, "-"+name)
	}

	f.cli("deploy", "base", fleetManifest(t, f.dir, "base", img), "--target", "tags.group = 'a'", "--priority", "5")
	waitFor(t, 90*time.Second, "base converged", func() bool { return f.status("base").Converged == 2 })
	f.cli("deploy", "top", fleetManifest(t, f.dir, "top", img), "--target", "true", "--priority", "10")
	waitFor(t, 90*time.Second, "top converged", func() bool {
		st := f.status("top")
		return st.Converged == 3 && st.Phase == fleet.PhaseCompleted
	})
	old := retained("ledge/fleet/deployments/top") // what an attacker could capture
	before := f.mqttDeployments(2)

	// An unknown name: refused, naming those there are.
	_, errOut, code := ledgeIn(t, "", f.env(), "fleet", "delete", "tpo")
	if code == 0 || !strings.Contains(errOut, `no fleet deployment "tpo"; there are: base, top`) {
		t.Errorf("delete tpo: exit %d, %q: want the deployments there are", code, errOut)
	}

	var del struct {
		Name, State string
		Generation  int64
		Changed     bool
		Devices     int
		Next        map[string]int
		Keep        int
	}
	out := f.cli("delete", "top", "--json")
	if err := json.Unmarshal([]byte(out), &del); err != nil || del.Name != "top" || del.State != "deleted" || !del.Changed || del.Generation != 2 ||
		del.Devices != 3 || del.Next["base"] != 2 || del.Keep != 1 {
		t.Fatalf("delete --json: %v\n%s\nwant top deleted at generation 2: 2 of its 3 devices to base, 1 keeping it", err, out)
	}
	t.Logf("ledge fleet delete top --json: %s", out)
	waitFor(t, 90*time.Second, "the devices of group a on base", func() bool {
		r := rows()
		return on(r[f.ids[0]], "base") && on(r[f.ids[1]], "base")
	})
	// What more the delete would bring, it brings in a pass that saw them
	// on base.
	ctl.waitPasses(t)
	r := rows()[f.ids[2]]
	if r.Deployment != "" || r.Deleted != "top" || r.State != "converged" || !strings.HasSuffix(r.Version, "-top") {
		t.Errorf("%s after the delete: %+v: want it still running top, shown as deleted", f.ids[2], r)
	}
	if got := f.mqttDeployments(2); !slices.Equal(got, before) {
		t.Errorf("%s, which no other deployment targets, took %v after the delete (before: %v)", f.ids[2], got, before)
	}
	if human := f.cli("devices"); !strings.Contains(human, "top (deleted)") {
		t.Errorf("devices does not say the third runs a deleted deployment:\n%s", human)
	}
	human := f.cli("status")
	t.Logf("ledge fleet status after the delete:\n%s", human)
	var all []fleet.DeploymentStatus
	json.Unmarshal([]byte(f.cli("status", "--json")), &all)
	if len(all) != 1 || all[0].Name != "base" || !strings.Contains(human, "1 deployments") || strings.Contains(human, "\ntop ") {
		t.Errorf("status lists %+v after the delete:\n%s\nwant base alone", all, human)
	}
	var ro fleet.Rollout
	if err := json.Unmarshal(retained("ledge/fleet/rollouts/top"), &ro); err != nil || ro.Phase != fleet.PhaseDeleted || ro.Generation != 2 || !ro.Converged.IsZero() {
		t.Errorf("top's rollout record after the delete: %+v %v, want deleted at generation 2", ro, err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"status", "top"}, `fleet deployment "top" was deleted; ledge fleet deploy top makes it again`},
		{[]string{"pause", "top"}, `fleet deployment "top" was deleted`},
	} {
		if _, errOut, code := ledgeIn(t, "", f.env(), append([]string{"fleet"}, c.args...)...); code == 0 || !strings.Contains(errOut, c.want) {
			t.Errorf("%v after the delete: exit %d, %q, want %q", c.args, code, errOut, c.want)
		}
	}
	if out := f.cli("delete", "top"); !strings.Contains(out, "already deleted (generation 2)") {
		t.Errorf("delete top again: %q", out)
	}

	// The attacker re-publishes top's signed definition (generation 1)
	// while no controller runs (a running one that saw the delete puts the
	// tombstone back at once: hub/fleet TestControllerDeletesDeployment);
	// the CLI and the controller started next refuse it.
	ctl.cmd.Process.Signal(syscall.SIGKILL)
	<-ctl.done
	fp := filepath.Join(f.dir, "replay")
	os.WriteFile(fp, old, 0o600)
	if out, err := exec.Command(pub, "-h", host, "-p", port, "-u", "fleet", "-P", "fleet-pw", "-r", "-q", "1",
		"-t", "ledge/fleet/deployments/top", "-f", fp).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v %s", err, out)
	}
	waitFor(t, 30*time.Second, "the replay refused", func() bool {
		return strings.Contains(f.cli("status"), "refused: top: generation 1 is older than generation 2")
	})
	ctl = f.startController()
	waitFor(t, 30*time.Second, "the new controller holds the lease", func() bool {
		return strings.Contains(ctl.stderr.String(), "fleet lease acquired")
	})
	// Its view held the replay from its first pass (it starts with what
	// the broker retains).
	ctl.waitPasses(t)
	if !strings.Contains(ctl.stderr.String(), "fleet deployment refused") {
		t.Errorf("the new controller does not say it refused the replay:\n%s", tail(ctl.stderr.String(), 3000))
	}
	r2 := rows()
	if got := f.mqttDeployments(2); !slices.Equal(got, before) || !on(r2[f.ids[0]], "base") || !on(r2[f.ids[1]], "base") || r2[f.ids[2]].Deleted != "top" {
		t.Errorf("after the replay: %s took %v (before %v); rows %+v: the deleted top came back", f.ids[2], got, before, r2)
	}

	// Deployed again under its name: not refused, and rolled out.
	out = f.cli("deploy", "top", fleetManifest(t, f.dir, "top", img), "--target", "true", "--priority", "10")
	if !strings.Contains(out, "deployment top generation 3 published") {
		t.Errorf("deploy top again: %q, want generation 3", out)
	}
	waitFor(t, 90*time.Second, "top deployed again converged", func() bool {
		st := f.status("top")
		return st.Converged == 3 && st.Phase == fleet.PhaseCompleted
	})
	for _, r := range f.devicesJSON() {
		if !on(r, "top") || r.Deleted != "" {
			t.Errorf("%s after top was deployed again: %+v", r.ID, r)
		}
	}
	if got := f.mqttDeployments(2); !slices.Equal(got, before) {
		t.Errorf("%s, which kept running top, was given it again (%v, before %v): the same manifest", f.ids[2], got, before)
	}
	// Deleted again, in words.
	out = f.cli("delete", "top")
	t.Logf("ledge fleet delete top: %s", out)
	if !strings.Contains(out, "deployment top deleted (generation 4): of the 3 devices given it, 2 take on their next deployment (base: 2) and 1 keeps what it runs") {
		t.Errorf("delete top: %q", out)
	}
}
