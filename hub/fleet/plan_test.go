package fleet

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// sim is a fleet on paper: devices that apply what they are given the
// next step, converging or failing as the test says.
type sim struct {
	t     *testing.T
	s     *Snapshot
	now   time.Time
	fails map[string]bool // deployment name -> its devices fail
	given map[string]int  // device -> assignments received
}

func newSim(t *testing.T, n int, tags func(i int) map[string]string) *sim {
	x := &sim{t: t, s: &Snapshot{Devices: map[string]*Device{}, Definitions: map[string]*Definition{}, Rollouts: map[string]*Rollout{},
		Invalid: map[string]string{}, Controllers: map[string]bool{}, Connected: true},
		now: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC), fails: map[string]bool{}, given: map[string]int{}}
	for i := range n {
		id := fmt.Sprintf("dev-%02d", i)
		st := &DeviceState{DeviceID: id, Tags: tags(i)}
		x.s.Devices[id] = &Device{ID: id, State: st, Online: true}
		x.publish(id)
	}
	return x
}

func (x *sim) publish(id string) {
	d := x.s.Devices[id]
	d.Doc, _ = json.Marshal(d.State)
}

func (x *sim) define(name, target string, prio int, waves []string, abort string) {
	d := &Definition{Name: name, Generation: 1, Created: x.now, Target: target, Priority: prio,
		Rollout: Policy{Waves: waves, Soak: Duration(10 * time.Second), AbortAfter: abort}, State: StateActive, Manifest: "manifest of " + name}
	if err := d.Validate(); err != nil {
		x.t.Fatal(err)
	}
	x.now = x.now.Add(time.Second)
	x.s.Definitions[name] = d
}

// step runs one controller pass and lets every device act on what it got.
func (x *sim) step(dt time.Duration) *Plan {
	x.now = x.now.Add(dt)
	p := MakePlan(x.s, x.now, "c1")
	for _, g := range p.Gives {
		d := x.s.Devices[g.Device]
		prev := ""
		if d.Assignment != nil {
			prev = d.Assignment.Version
		}
		v := NextVersion(x.now, prev, g.Def.Name)
		sum := sha256.Sum256([]byte(g.Def.Manifest + v))
		d.Assignment = &Assignment{Deployment: g.Def.Name, Generation: g.Def.Generation, ManifestDigest: g.Def.ManifestDigest(),
			Version: v, Digest: hex.EncodeToString(sum[:]), Wave: g.Wave, RollbackOf: g.RollbackOf, Previous: g.Previous}
		x.given[g.Device]++
	}
	for name, r := range p.Rollouts {
		x.s.Rollouts[name] = r
	}
	// Devices apply: converged, or failed and rolled back by themselves.
	for id, d := range x.s.Devices {
		a := d.Assignment
		if a == nil {
			continue
		}
		rep := &d.State.Properties.Reported
		if rep.Deployment != nil && rep.Deployment.Digest == a.Digest || rep.RolledBackFrom != nil && rep.RolledBackFrom.Version == a.Version {
			continue
		}
		if x.fails[a.Deployment] {
			rep.RolledBackFrom = &RolledBack{Version: a.Version, Reason: "module app: image missing"}
		} else {
			rep.Deployment = &DeployedState{Version: a.Version, Digest: a.Digest, State: "converged"}
			rep.RolledBackFrom = nil
		}
		x.publish(id)
	}
	return p
}

func (x *sim) holding(name string) int {
	n := 0
	for _, d := range x.s.Devices {
		if d.Assignment != nil && d.Assignment.Deployment == name {
			n++
		}
	}
	return n
}

func TestPlanWavesPriorityAbort(t *testing.T) {
	x := newSim(t, 20, func(i int) map[string]string {
		tags := map[string]string{"site": "berlin"}
		if i < 12 {
			tags["group"] = "a"
		}
		if i < 4 {
			tags["hw"] = "pi5"
		}
		return tags
	})
	x.define("people", "tags.group = 'a'", 10, []string{"1", "50%", "100%"}, "5%")

	// Wave 1: one device, then it soaks; wave 2: half of 12; wave 3: all.
	for _, want := range []struct {
		dt      time.Duration
		holding int
		phase   string
	}{
		{0, 1, PhaseRolling}, {time.Second, 1, PhaseSoaking}, {5 * time.Second, 1, PhaseSoaking},
		{6 * time.Second, 6, PhaseRolling}, {time.Second, 6, PhaseSoaking}, {11 * time.Second, 12, PhaseRolling},
		{time.Second, 12, PhaseSoaking}, {11 * time.Second, 12, PhaseCompleted},
	} {
		x.step(want.dt)
		if got := x.holding("people"); got != want.holding || x.s.Rollouts["people"].Phase != want.phase {
			t.Fatalf("after %s: %d devices hold people in phase %s, want %d in %s", want.dt, got, x.s.Rollouts["people"].Phase, want.holding, want.phase)
		}
	}
	st := StatusOf(x.s, "people")
	if st.Targeted != 12 || st.Converged != 12 || st.Waves[0].Applied != 1 || st.Waves[1].Applied != 5 || st.Waves[2].Applied != 6 {
		t.Fatalf("status: %+v", st)
	}

	// A higher priority for 4 of them takes those 4 over, in its own waves.
	x.define("people-pi5", "tags.group = 'a' AND tags.hw = 'pi5'", 20, []string{"100%"}, "")
	x.step(time.Second)
	x.step(time.Second)
	if got := x.holding("people-pi5"); got != 4 {
		t.Fatalf("people-pi5 holds %d devices, want 4", got)
	}
	if got := x.holding("people"); got != 8 {
		t.Fatalf("people holds %d devices, want 8", got)
	}

	// A deployment whose devices fail aborts after its first wave, and
	// that wave goes back to what it had.
	x.define("broken", "tags.site = 'berlin'", 30, []string{"1", "50%", "100%"}, "5%")
	x.fails["broken"] = true
	x.step(time.Second) // wave 1 given
	if got := x.holding("broken"); got != 1 {
		t.Fatalf("broken given to %d devices in wave 1, want 1", got)
	}
	var victim string
	for id, d := range x.s.Devices {
		if d.Assignment != nil && d.Assignment.Deployment == "broken" {
			victim = id
		}
	}
	x.step(time.Second) // the device failed: abort
	if ro := x.s.Rollouts["broken"]; ro.Phase != PhaseAborted {
		t.Fatalf("broken: phase %s, want aborted", ro.Phase)
	}
	x.step(time.Second)
	if a := x.s.Devices[victim].Assignment; a.Deployment == "broken" || a.RollbackOf != "broken" {
		t.Fatalf("the failed wave's device has %+v, want rolled back", a)
	}
	for range 5 {
		x.step(20 * time.Second)
	}
	if got := x.holding("broken"); got != 0 {
		t.Fatalf("an aborted deployment still holds %d devices", got)
	}
	if x.holding("people")+x.holding("people-pi5") != 12 {
		t.Fatalf("after the abort, people holds %d and people-pi5 %d", x.holding("people"), x.holding("people-pi5"))
	}
	// Every device got each deployment once: 12 devices of group a got
	// people once (4 later people-pi5), the victim broken once and its
	// deployment back once.
	for id, n := range x.given {
		if n > 3 {
			t.Errorf("%s got %d assignments", id, n)
		}
	}
	st = StatusOf(x.s, "broken")
	if st.Phase != PhaseAborted || len(st.RolledBack) != 1 || st.Reason == "" {
		t.Errorf("broken status: %+v", st)
	}
}

func TestNextVersionGoesUp(t *testing.T) {
	now := time.UnixMilli(1_750_000_000_000)
	v1 := NextVersion(now, "", "a")
	v2 := NextVersion(now, v1, "b")
	v3 := NextVersion(now.Add(-time.Hour), v2, "a")
	if v1 != "1750000000000-a" || v2 != "1750000000001-b" || v3 != "1750000000002-a" {
		t.Fatalf("versions %s %s %s", v1, v2, v3)
	}
}

// BenchmarkControllerPass measures one controller pass (parse the
// retained view, decide) on 10,000 devices: the controller's own cost,
// which grows with the fleet.
func BenchmarkControllerPass(b *testing.B) {
	k := testKeys()
	v := newView(DefaultTopics)
	def := &Definition{Name: "people", Generation: 1, Target: "tags.site = 'site-3'", Rollout: Policy{Waves: []string{"1", "10%", "100%"}},
		State: StateActive, Manifest: "m"}
	payload, _ := Seal(def, k)
	v.put(DefaultTopics.Definition("people"), payload, false)
	for i := range 10000 {
		id := fmt.Sprintf("sim-%05d", i)
		st := DeviceState{DeviceID: id, Tags: map[string]string{"site": fmt.Sprintf("site-%d", i%10), "hw": "pi5"}}
		st.Properties.Reported.Deployment = &DeployedState{Version: "1", Digest: "d", State: "converged"}
		doc, _ := json.Marshal(st)
		v.put(DefaultTopics.State(id), doc, false)
		v.put(DefaultTopics.Online(id), OnlinePayload(), false)
	}
	for b.Loop() {
		s := v.Snapshot(k)
		MakePlan(s, time.Now(), "c")
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/10000, "µs/device")
}

// TestStatusPendingWhenTargetsChange (outside-in audit of issue 14): a
// completed rollout whose devices all converged showed devices pending
// (`targeted 1, applied 1, converged 1, pending 1`) once its targeted
// set changed: wave sizes are computed again from the devices targeted
// now, and a device given the deployment in a later wave (a higher
// priority deleted, a device that matched later) left an earlier wave
// "short". Devices not yet given the deployment are pending in the wave
// in progress and those after it; a wave before holds only its own.
func TestStatusPendingWhenTargetsChange(t *testing.T) {
	x := newSim(t, 12, func(i int) map[string]string {
		if i < 4 {
			return map[string]string{"hw": "pi5"}
		}
		return map[string]string{"hw": "pi4"}
	})
	x.define("high", "tags.hw = 'pi5'", 20, []string{"100%"}, "")
	x.define("people", "true", 10, []string{"1", "50%", "100%"}, "")
	for range 10 {
		x.step(11 * time.Second)
	}
	check := func(when string, targeted int) {
		t.Helper()
		st := StatusOf(x.s, "people")
		sum := 0
		for _, w := range st.Waves {
			sum += w.Pending
		}
		if st.Phase != PhaseCompleted || st.Targeted != targeted || st.Converged != targeted || st.Pending != 0 || sum != 0 {
			t.Errorf("%s: phase %s, targeted %d, converged %d, pending %d (waves %+v), want %d converged and none pending",
				when, st.Phase, st.Targeted, st.Converged, st.Pending, st.Waves, targeted)
		}
	}
	check("people completed on the 8 pi4", 8)
	// The higher priority goes: its 4 devices get people at once.
	delete(x.s.Definitions, "high")
	for range 3 {
		x.step(time.Second)
	}
	if got := x.holding("people"); got != 12 {
		t.Fatalf("people holds %d devices, want 12", got)
	}
	check("the 4 pi5 came to people after it completed", 12)

	// While rolling: the devices not given yet are pending in the waves
	// to come, none in the wave done.
	x.define("next", "true", 30, []string{"1", "50%", "100%"}, "")
	x.step(time.Second) // wave 1 given
	x.step(time.Second) // converged: soaking
	st := StatusOf(x.s, "next")
	if st.Pending != 11 || st.Waves[0].Pending != 0 || st.Waves[1].Pending != 5 || st.Waves[2].Pending != 6 {
		t.Errorf("next in wave 1: pending %d, waves %+v: want 11 = 0 + 5 + 6", st.Pending, st.Waves)
	}
	// Which devices are pending, and why: an operator asks "who?".
	x.s.Devices["dev-03"].Online = false
	st = StatusOf(x.s, "next")
	if len(st.PendingDevices) != 11 {
		t.Fatalf("pending devices %+v, want the 11 not given it yet", st.PendingDevices)
	}
	for _, p := range st.PendingDevices {
		if want := map[bool]string{true: "offline", false: "not given yet"}[p.Device == "dev-03"]; p.Why != want {
			t.Errorf("pending %s: %q, want %q", p.Device, p.Why, want)
		}
	}
}
