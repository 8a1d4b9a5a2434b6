package main

import (
	"strings"
	"testing"
	"time"

	"ledge/hub/fleet"
	"ledge/internal/testenv"
	"ledge/internal/testenv/natstest"
)

// TestFleetRolloutNATSCluster runs a rollout across a three-node
// nats-server cluster (from its Go module, JetStream on, through its
// MQTT listeners), devices spread over the nodes, and kills the node
// the controller and a third of the devices are on after the first
// wave. The rollout completes on the two nodes left.
//
// nats-server keeps, on each node, an index of retained messages fed by
// a JetStream consumer that may live on another node; when that node
// dies, the index stops learning new retained topics (docs/fleet.md).
// The test kills the node that hosts exactly one other node's index
// (natstest.ChooseKill), so that one of the two nodes left is stale
// and the other healthy: the controller, failing over, must pass over
// the stale node (its probe), and the devices that fail over onto it
// must still get their deployments (the controller publishes a
// deployment again to an online device that has not taken it).
func TestFleetRolloutNATSCluster(t *testing.T) {
	testenv.Docker(t)
	t0 := time.Now()
	nc := natstest.Start(t, 3, "fleet", "fleet-pw")
	victim, stale, healthy := nc.ChooseKill()
	t.Logf("cluster up in %s", time.Since(t0).Round(time.Millisecond))
	img := testImage(t, "fleetnats")
	n := 6
	// Device i starts on node order[i%3]: 0 and 3 on the victim, 1 and
	// 4 on the stale node, 2 and 5 on the healthy one; each fails over
	// to the nodes after its own.
	order := []string{nc.MQTT[victim], nc.MQTT[stale], nc.MQTT[healthy]}
	f := newFleet(t, n, order, func(i int) string { return "site: berlin, group: a" })
	// The CLI asks the healthy node first; the controller starts on the
	// victim and fails over to the stale node first.
	f.brokers = []string{nc.MQTT[healthy], nc.MQTT[stale], nc.MQTT[victim]}
	dumpOnFail = func() {
		out, errOut, _ := ledgeIn(t, "", f.env(), "fleet", "devices")
		t.Logf("devices:\n%s%s", out, errOut)
		t.Logf("device 0:\n%s", tail(f.devices[0].stderr.String(), 3000))
	}
	waitFor(t, 60*time.Second, "6 devices online", func() bool {
		online := 0
		for _, r := range f.devicesJSON() {
			if r.Online && r.Tags["group"] == "a" {
				online++
			}
		}
		return online == n
	})
	t.Logf("%d devices online at %s", n, time.Since(t0).Round(time.Millisecond))
	ctl := f.startControllerOn(order, "--resend", "3s")
	dumpOnFail = func() {
		out, errOut, _ := ledgeIn(t, "", f.env(), "fleet", "devices")
		t.Logf("devices:\n%s%s", out, errOut)
		out, errOut, _ = ledgeIn(t, "", f.env(), "fleet", "status", "people")
		t.Logf("status:\n%s%s", out, errOut)
		t.Logf("controller:\n%s", tail(ctl.stderr.String(), 4000))
		for _, i := range []int{0, 3} {
			t.Logf("device %d:\n%s", i, tail(f.devices[i].stderr.String(), 2000))
		}
	}
	t.Cleanup(func() { dumpOnFail = nil })
	start := time.Now()
	f.cli("deploy", "people", fleetManifest(t, f.dir, "people", img), "--target", "tags.group = 'a'",
		"--waves", "1,50%,100%", "--soak", "2s", "--abort-after", "50%")
	waitFor(t, 90*time.Second, "wave 1 converged", func() bool { return f.status("people").Converged >= 1 })
	t.Logf("wave 1 converged after %s; killing %s (the controller's and devices 0 and 3's); %s's retained index lived there, %s's did not",
		time.Since(start).Round(time.Millisecond), nc.Name(victim), nc.Name(stale), nc.Name(healthy))
	nc.Kill(victim)
	waitFor(t, 180*time.Second, "people completed on the two nodes left", func() bool {
		st := f.status("people")
		return st.Phase == fleet.PhaseCompleted && st.Converged == n && st.Failed == 0
	})
	t.Logf("people: %d devices in 3 waves across the cluster in %s, %s killed after wave 1; the controller published %d deployments again",
		n, time.Since(start).Round(time.Millisecond), nc.Name(victim), strings.Count(ctl.stderr.String(), "publishing it again"))
	for i := range n {
		if got := f.mqttDeployments(i); len(got) != 1 {
			t.Errorf("%s took %v, want people once", f.ids[i], got)
		}
	}
	// The controller, failing over, tried the stale node first: it
	// passed over it, unless the stale node turned its connection down
	// while the cluster recovered (then it went on to the healthy one).
	t.Logf("the controller passed over the stale node: %v", strings.Contains(ctl.stderr.String(), "broker node passed over"))
	for _, l := range strings.Split(ctl.stderr.String(), "\n") {
		if strings.Contains(l, "level=WARN") {
			t.Logf("controller: %s", l)
		}
	}
	// The CLI, asked to try the stale node first, passes over it.
	out, errOut, code := ledgeIn(t, "", f.envWith([]string{nc.MQTT[stale], nc.MQTT[healthy]}), "fleet", "status", "people")
	if code != 0 || !strings.Contains(out, "targeted 6, applied 6, converged 6, failed 0, pending 0") ||
		!strings.Contains(errOut, "broker node passed over") {
		t.Errorf("ledge fleet status through the stale node first: exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("done at %s", time.Since(t0).Round(time.Millisecond))
}
