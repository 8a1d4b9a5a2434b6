package fleet

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"ledge/internal/testenv"
)

// TestPlanDelete: a deleted deployment (its tombstone) moves its devices
// to the deployment they should have by priority (at once when that one's
// rollout is completed, in its waves while it rolls out); devices no
// other targets keep what they have (no assignment, no rollback to what
// they had before); an offline device given it that has not taken it has
// it withdrawn; its rollout record becomes a deleted one at the
// tombstone's generation; it is gone from the status, and a deploy of the
// name later rolls out again.
func TestPlanDelete(t *testing.T) {
	x := newSim(t, 6, func(i int) map[string]string {
		tags := map[string]string{"site": "berlin"}
		if i < 4 {
			tags["group"] = "a"
		}
		return tags
	})
	x.define("base", "tags.group = 'a'", 5, []string{"100%"}, "")
	x.define("other", "tags.site = 'paris'", 1, []string{"100%"}, "")
	for range 3 {
		x.step(time.Second)
	}
	// dev-05 (not in group a) was given "other" before: its Previous
	// names a deployment in force, which a rollback would give it back,
	// and a delete must not.
	x.s.Devices["dev-05"].Assignment = &Assignment{Deployment: "other", ManifestDigest: x.s.Definitions["other"].ManifestDigest(), Version: "1-other", Digest: "d-other"}
	x.define("top", "true", 10, []string{"100%"}, "")
	x.s.Devices["dev-05"].Online = false // given top; takes it only when back
	x.s.Devices["dev-05"].State.Properties.Reported.Deployment = &DeployedState{Version: "1-other", Digest: "d-other", State: "converged"}
	x.publish("dev-05")
	x.step(time.Second)
	for range 2 {
		x.step(20 * time.Second)
	}
	if got := x.holding("top"); got != 6 || x.s.Rollouts["top"].Phase != PhaseCompleted {
		t.Fatalf("top holds %d devices in phase %s, want 6 completed", got, x.s.Rollouts["top"].Phase)
	}
	// dev-05 did not apply it: offline (the sim applies at once, undo it).
	rep := &x.s.Devices["dev-05"].State.Properties.Reported
	rep.Deployment = &DeployedState{Version: "1-other", Digest: "d-other", State: "converged"}
	x.publish("dev-05")
	given := maps.Clone(x.given)

	x.s.Deleted = map[string]*Definition{"top": Tombstone("top", 2, x.s.Definitions["top"].Created)}
	delete(x.s.Definitions, "top")
	p := x.step(time.Second)
	moved := map[string]bool{}
	for _, g := range p.Gives {
		if g.Def.Name != "base" || g.Wave != 0 || g.DeletedFrom != "top" || g.Previous != "top" || g.RollbackOf != "" {
			t.Errorf("give %+v: want base at once (its rollout is completed), from the deleted top", g)
		}
		moved[g.Device] = true
	}
	if len(moved) != 4 || !moved["dev-00"] || !moved["dev-03"] {
		t.Errorf("moved %v, want the 4 devices of group a", moved)
	}
	if len(p.Withdraw) != 1 || p.Withdraw[0] != (Withdrawal{Device: "dev-05", Deployment: "top"}) {
		t.Errorf("withdraw %+v, want dev-05's top (offline, not taken)", p.Withdraw)
	}
	if ro := p.Rollouts["top"]; ro == nil || ro.Phase != PhaseDeleted || ro.Generation != 2 {
		t.Errorf("top's rollout record %+v, want deleted at generation 2", ro)
	}
	if x.given["dev-04"] != given["dev-04"] || x.given["dev-05"] != given["dev-05"] {
		t.Errorf("devices no other deployment targets were given something: %v (before %v)", x.given, given)
	}
	if a := x.s.Devices["dev-04"].Assignment; a.Deployment != "top" {
		t.Errorf("dev-04's assignment %+v, want top kept", a)
	}
	x.s.Devices["dev-05"].Assignment = nil // as the controller withdraws it
	// Nothing more: no gives, no rollout record again.
	for range 3 {
		if p := x.step(time.Second); len(p.Gives) != 0 || len(p.Rollouts) != 0 || len(p.Withdraw) != 0 {
			t.Fatalf("after the delete, a pass plans %+v", p)
		}
	}
	if StatusOf(x.s, "top") != nil {
		t.Error("the deleted deployment has a status")
	}
	rows := Rows(x.s, nil)
	if r := rows[4]; r.ID != "dev-04" || r.Deployment != "" || r.Deleted != "top" {
		t.Errorf("dev-04's row %+v, want no deployment, deleted top", r)
	}
	if r := rows[0]; r.Deployment != "base" || r.Deleted != "" {
		t.Errorf("dev-00's row %+v, want base", r)
	}

	// Deployed again: above the tombstone, a new rollout.
	if g := NextGeneration(x.s, "top"); g != 3 {
		t.Fatalf("NextGeneration after the delete: %d, want 3", g)
	}
	x.define("top", "true", 10, []string{"100%"}, "")
	x.s.Definitions["top"].Generation = 3
	delete(x.s.Deleted, "top")
	for range 3 {
		x.step(time.Second)
	}
	if got := x.holding("top"); got != 6 || x.s.Rollouts["top"].Phase == PhaseDeleted {
		t.Fatalf("top deployed again holds %d devices, phase %s; want 6", got, x.s.Rollouts["top"].Phase)
	}
}

// TestControllerDeletesDeployment drives a real controller through a
// real mosquitto: a deployment deleted by its signed tombstone moves the
// devices another deployment targets to it (once), leaves the others
// with what they run (taking nothing), withdraws it from an offline
// device that had not taken it, and records the deletion; an attacker
// who re-publishes the deleted definition's signed bytes (mosquitto_pub)
// does not bring it back, not even to a controller started after it;
// the name deployed again rolls out; and a replay of the tombstone then
// does not delete it.
func TestControllerDeletesDeployment(t *testing.T) {
	pub := testenv.Command(t, "mosquitto_pub", "mosquitto-clients")
	addr, _ := simMosquitto(t)
	keys := testKeys()
	var dc simCounters
	// sim-00001 is a pi4, 2 a jetson, 3 a pi5; 5 a jetson that takes
	// nothing yet.
	devs := []*simDevice{startSimDevice(t, addr, 1, &dc), startSimDevice(t, addr, 2, &dc), startSimDevice(t, addr, 3, &dc)}
	late := startSimDeviceLate(t, addr, 5, &dc)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	conn, err := Dial(ctx, ConnConfig{URLs: []string{"tcp://" + addr}, ClientID: "delete-cli", Topics: DefaultTopics})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	run := func(id string) (ctl *Controller, stop func(), log *syncLog) {
		log = &syncLog{}
		cctx, ccancel := context.WithCancel(ctx)
		c, err := Dial(cctx, ConnConfig{URLs: []string{"tcp://" + addr}, ClientID: id, Topics: DefaultTopics})
		if err != nil {
			t.Fatal(err)
		}
		ctl = &Controller{Conn: c, ID: id, Verifier: keys, Sealer: simSealer{keys}, Settle: 100 * time.Millisecond,
			Resend: time.Minute, Log: slog.New(slog.NewTextHandler(log, nil))}
		done := make(chan struct{})
		go func() { ctl.Run(cctx); close(done) }()
		return ctl, func() { ccancel(); <-done; c.Close() }, log
	}
	ctlA, stopA, logA := run("controller-a")
	stopped := false
	defer func() {
		if !stopped {
			stopA()
		}
	}()

	created := time.Unix(1700000000, 0).UTC()
	seal := func(d *Definition) []byte {
		t.Helper()
		b, err := Seal(d, keys)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	define := func(name, target string, prio int, gen int64, manifest string) *Definition {
		return &Definition{Name: name, Generation: gen, Created: created, Target: target, Priority: prio,
			Rollout: Policy{Waves: []string{"100%"}}, State: StateActive, Manifest: manifest}
	}
	put := func(name string, payload []byte) {
		t.Helper()
		if err := conn.Publish(ctx, DefaultTopics.Definition(name), payload, true); err != nil {
			t.Fatal(err)
		}
	}
	// An attacker's publish: the retained bytes again, by mosquitto_pub.
	replay := func(name string, payload []byte) {
		t.Helper()
		f := filepath.Join(t.TempDir(), "replay")
		os.WriteFile(f, payload, 0o600)
		host, port, _ := net.SplitHostPort(addr)
		if out, err := exec.Command(pub, "-h", host, "-p", port, "-r", "-q", "1", "-t", DefaultTopics.Definition(name), "-f", f).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub: %v %s", err, out)
		}
	}
	versions := func(d *simDevice) []string {
		d.mu.Lock()
		defer d.mu.Unlock()
		return slices.Clone(d.versions)
	}
	snap := func() *Snapshot { return conn.View().Snapshot(keys) }
	convergedOn := func(d *simDevice, name string) bool {
		a := snap().Devices[d.id].Assignment
		d.mu.Lock()
		defer d.mu.Unlock()
		return a != nil && a.Deployment == name && d.converged == a.Digest
	}

	put("low", seal(define("low", "tags.hw = 'pi4'", 5, 1, "low manifest")))
	waitUntil(t, 30*time.Second, "sim-00001 converged on low", func() bool { return convergedOn(devs[0], "low") })
	topV1 := seal(define("top", "tags.site != 'nowhere'", 10, 1, "top manifest 1"))
	put("top", topV1)
	waitUntil(t, 30*time.Second, "every device converged on top, the late one given it", func() bool {
		a := snap().Devices[late.id].Assignment
		return convergedOn(devs[0], "top") && convergedOn(devs[1], "top") && convergedOn(devs[2], "top") && a != nil && a.Deployment == "top"
	})
	// The late device goes offline before it took top.
	late.cli.Publish(DefaultTopics.Online(late.id), 1, true, OfflinePayload).Wait()
	late.cli.Disconnect(100)
	waitUntil(t, 30*time.Second, "the late device offline", func() bool { return !snap().Devices[late.id].Online })
	before := [][]string{versions(devs[0]), versions(devs[1]), versions(devs[2])}
	if held, err := conn.Check(ctx, []string{DefaultTopics.Deployment(late.id)}); err != nil || held[DefaultTopics.Deployment(late.id)] == nil {
		t.Fatalf("the late device's deployment is not retained before the delete (%v)", err)
	}

	// Delete top: its signed tombstone, one generation up.
	g := NextGeneration(snap(), "top")
	tomb := seal(Tombstone("top", g, created))
	put("top", tomb)
	waitUntil(t, 30*time.Second, "sim-00001 converged on low again", func() bool { return convergedOn(devs[0], "low") })
	waitUntil(t, 30*time.Second, "top's rollout record deleted, the late device's assignment withdrawn", func() bool {
		s := snap()
		r := s.Rollouts["top"]
		return r != nil && r.Phase == PhaseDeleted && r.Generation == g && s.Devices[late.id].Assignment == nil
	})
	if held, err := conn.Check(ctx, []string{DefaultTopics.Deployment(late.id)}); err != nil || held[DefaultTopics.Deployment(late.id)] != nil {
		t.Fatalf("the late device's deployment of the deleted top is still retained (%v)", err)
	}
	// What more the delete would bring, it brings in a pass that saw it
	// done: sim-00001 converged on low, top's record deleted, the late
	// device's assignment withdrawn.
	waitSeen(t, ctlA, "the delete done", func(s *Snapshot) bool {
		r := s.Rollouts["top"]
		return convergedIn(s, devs[0].id, "low") && r != nil && r.Phase == PhaseDeleted && s.Devices[late.id].Assignment == nil
	})
	if got := versions(devs[0]); len(got) != len(before[0])+1 || !strings.HasSuffix(got[len(got)-1], "-low") {
		t.Errorf("sim-00001 took %v after %v: want low once more", got, before[0])
	}
	for i := 1; i < 3; i++ {
		if got := versions(devs[i]); !slices.Equal(got, before[i]) {
			t.Errorf("%s, which no other deployment targets, took %v after %v: want nothing (it keeps what it runs)", devs[i].id, got, before[i])
		}
	}
	s := snap()
	if s.Definitions["top"] != nil || s.Deleted["top"] == nil || StatusOf(s, "top") != nil {
		t.Errorf("top after the delete: definition %v, tombstone %v", s.Definitions["top"], s.Deleted["top"])
	}
	for _, r := range Rows(s, nil) {
		if r.ID == devs[1].id && (r.Deployment != "" || r.Deleted != "top") {
			t.Errorf("%s's row: deployment %q deleted %q, want the deleted top", r.ID, r.Deployment, r.Deleted)
		}
	}
	if !strings.Contains(logA.String(), "deployment deleted") || !strings.Contains(logA.String(), "withdrawn") {
		t.Errorf("the controller's log does not say it deleted top and withdrew it:\n%s", logA.String())
	}
	// The late device comes back: nothing waits for it.
	back := startSimDevice(t, addr, 5, &dc)

	// The attacker puts top's last signed definition back while no
	// controller runs (one that saw the delete would put the tombstone
	// back, as controller-b does below); one started after it refuses it
	// from the broker's rollout record.
	stopA()
	stopped = true
	replay("top", topV1)
	waitUntil(t, 30*time.Second, "the replay seen", func() bool {
		_, bad := snap().Invalid["top"]
		return bad
	})
	ctlB, stopB, logB := run("controller-b")
	defer stopB()
	waitUntil(t, 30*time.Second, "controller-b holds the lease", func() bool { return strings.Contains(logB.String(), "fleet lease acquired") })
	// Its view held the replay from its first pass (Dial returns with
	// what the broker retains).
	waitPasses(t, ctlB)
	for i, d := range devs {
		if got := versions(d); len(got) != len(before[i])+map[bool]int{true: 1}[i == 0] {
			t.Errorf("%s took %v after the replay: the deleted top came back", d.id, got)
		}
	}
	if got := versions(back); len(got) != 0 {
		t.Errorf("the late device took %v when it came back, want nothing", got)
	}
	if why := snap().Invalid["top"]; !strings.Contains(why, "generation 1") || !strings.Contains(why, fmt.Sprintf("generation %d", g)) {
		t.Errorf("the replay is refused with %q, want both generations named", why)
	}
	if !strings.Contains(logB.String(), "fleet deployment refused") {
		t.Errorf("controller-b's log does not say it refused the replay:\n%s", logB.String())
	}

	// Deployed again under its name: above the tombstone, and rolled out.
	g2 := NextGeneration(snap(), "top")
	if g2 != g+1 {
		t.Errorf("NextGeneration after the delete and the replay: %d, want %d", g2, g+1)
	}
	put("top", seal(define("top", "tags.site != 'nowhere'", 10, g2, "top manifest 2")))
	waitUntil(t, 30*time.Second, "every device converged on top deployed again", func() bool {
		return convergedOn(devs[0], "top") && convergedOn(devs[1], "top") && convergedOn(devs[2], "top") && convergedOn(back, "top")
	})
	again := [][]string{versions(devs[0]), versions(devs[1]), versions(devs[2]), versions(back)}
	// The tombstone replayed while controller-b, which saw top deployed
	// again, runs: refused, and top's definition put back over it, so top
	// stays in force for every device (sim-00001, which low targets too,
	// included).
	replay("top", tomb)
	waitUntil(t, 30*time.Second, "the replayed tombstone replaced", func() bool {
		return strings.Contains(logB.String(), "replayed fleet deployment replaced")
	})
	waitUntil(t, 30*time.Second, "top's definition back on the broker", func() bool {
		d := snap().Definitions["top"]
		return d != nil && d.Generation == g2
	})
	waitSeen(t, ctlB, "top's definition put back", func(s *Snapshot) bool {
		d := s.Definitions["top"]
		return d != nil && d.Generation == g2
	})
	for i, d := range append(devs, back) {
		if got := versions(d); !slices.Equal(got, again[i]) {
			t.Errorf("%s took %v after the tombstone was replayed, want top kept (%v)", d.id, got, again[i])
		}
	}
	for _, r := range Rows(snap(), nil) {
		if r.Deployment != "top" || r.Deleted != "" {
			t.Errorf("%s's row after the replayed tombstone: deployment %q deleted %q, want top", r.ID, r.Deployment, r.Deleted)
		}
	}
	if r := snap().Rollouts["top"]; r == nil || r.Phase == PhaseDeleted {
		t.Errorf("top's rollout after the replayed tombstone: %+v", r)
	}
}

// TestPlanDeleteNextInWaves: the devices of a deleted deployment join
// their next deployment's rollout as any device it targets: while it
// rolls out, in its waves (its soak and abort threshold hold for them
// too); while it is paused, not at all (they keep what they run).
func TestPlanDeleteNextInWaves(t *testing.T) {
	for _, paused := range []bool{false, true} {
		x := newSim(t, 4, func(int) map[string]string { return map[string]string{"group": "a"} })
		x.define("top", "true", 10, []string{"100%"}, "")
		for range 3 {
			x.step(time.Second)
		}
		x.define("next", "tags.group = 'a'", 5, []string{"1", "100%"}, "")
		if paused {
			x.s.Definitions["next"].State = StatePaused
		}
		x.step(time.Second) // next's rollout: no device targeted yet
		x.s.Deleted = map[string]*Definition{"top": Tombstone("top", 2, x.s.Definitions["top"].Created)}
		delete(x.s.Definitions, "top")
		x.step(time.Second)
		want := map[bool]int{false: 1, true: 0}[paused]
		if got := x.holding("next"); got != want {
			t.Fatalf("paused %v: next given to %d devices at once, want %d (its wave 1, or none while paused)", paused, got, want)
		}
		if got := x.holding("top"); got != 4-want {
			t.Fatalf("paused %v: %d devices keep the deleted top, want %d", paused, got, 4-want)
		}
		x.step(time.Second)      // wave 1 converged: soak
		x.step(11 * time.Second) // soaked: wave 2
		x.step(time.Second)
		if got, want := x.holding("next"), map[bool]int{false: 4, true: 0}[paused]; got != want {
			t.Fatalf("paused %v: next holds %d devices after its waves, want %d", paused, got, want)
		}
	}
}
