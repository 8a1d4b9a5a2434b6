package fleet

import (
	"testing"
	"time"
)

// TestPlanPauseResumeRollback: the operator's `ledge fleet pause`,
// `resume` and `rollback` (docs/fleet.md), which no other test drove
// through a rollout: pause stops new waves (those that have it keep it),
// resume goes on, rollback gives the devices that have it, at once, the
// next deployment that targets them, else the one they had before, and a
// device that had none from the fleet keeps what it runs; deploying the
// name again starts from wave 1.
func TestPlanPauseResumeRollback(t *testing.T) {
	x := newSim(t, 12, func(i int) map[string]string {
		if i < 8 {
			return map[string]string{"site": "berlin"}
		}
		return map[string]string{"site": "paris"}
	})
	x.define("base", "tags.site = 'berlin'", 5, []string{"100%"}, "")
	for range 3 {
		x.step(11 * time.Second)
	}
	if got := x.holding("base"); got != 8 {
		t.Fatalf("base holds %d devices, want the 8 in berlin", got)
	}
	x.define("people", "true", 10, []string{"1", "50%", "100%"}, "")
	x.step(time.Second) // wave 1 given
	x.step(time.Second) // converged: soaking
	if got := x.holding("people"); got != 1 {
		t.Fatalf("people holds %d devices in wave 1, want 1", got)
	}
	setState := func(state string) {
		def := *x.s.Definitions["people"]
		def.State, def.Generation = state, def.Generation+1
		x.s.Definitions["people"] = &def
	}

	// Paused: no wave starts however long it soaks; the one device keeps it.
	setState(StatePaused)
	for range 5 {
		x.step(11 * time.Second)
	}
	if got, ph := x.holding("people"), x.s.Rollouts["people"].Phase; got != 1 || ph != PhasePaused {
		t.Fatalf("paused: people holds %d devices in phase %s, want 1 in %s", got, ph, PhasePaused)
	}
	if st := StatusOf(x.s, "people"); st.Phase != PhasePaused || st.Converged != 1 {
		t.Errorf("status while paused: %+v", st)
	}

	// Resumed: wave 2 (half of 12) follows.
	setState(StateActive)
	x.step(time.Second)
	x.step(time.Second)
	if got := x.holding("people"); got != 6 {
		t.Fatalf("resumed: people holds %d devices, want 6 (wave 2)", got)
	}

	// Rolled back: the berlin devices that have it go back to base at
	// once; a paris device that had nothing from the fleet keeps what it
	// runs (nothing is given to it).
	var paris []string
	for id, d := range x.s.Devices {
		if d.Assignment != nil && d.Assignment.Deployment == "people" && d.State.Tags["site"] == "paris" {
			paris = append(paris, id)
		}
	}
	before := map[string]int{}
	for id, n := range x.given {
		before[id] = n
	}
	setState(StateRolledBack)
	x.step(time.Second)
	x.step(time.Second)
	if got := x.holding("base"); got != 8 {
		t.Errorf("after the rollback base holds %d devices, want the 8 in berlin back on it", got)
	}
	if ph := x.s.Rollouts["people"].Phase; ph != PhaseRolledBack {
		t.Errorf("people's phase after the rollback: %s, want %s", ph, PhaseRolledBack)
	}
	for _, id := range paris {
		if x.given[id] != before[id] {
			t.Errorf("%s (paris, nothing from the fleet before people) was given %d more assignments on the rollback, want none",
				id, x.given[id]-before[id])
		}
	}
	for range 5 {
		x.step(11 * time.Second)
	}
	for id, d := range x.s.Devices {
		if d.Assignment != nil && d.Assignment.Deployment == "people" && d.State.Tags["site"] == "berlin" {
			t.Errorf("%s still holds the rolled-back people", id)
		}
	}

	// Deployed again: a new rollout from wave 1.
	setState(StateActive)
	p := x.step(time.Second)
	given := 0
	for _, g := range p.Gives {
		if g.Def.Name == "people" {
			given++
		}
	}
	// The paris devices that kept people hold it already: wave 1 (one
	// device) is full when one of them is among the targeted.
	if ro := x.s.Rollouts["people"]; ro.Phase == PhaseRolledBack || ro.Wave != 0 || given > 1 {
		t.Errorf("deployed again: phase %s, wave %d, %d given at once; want a new rollout from wave 1", ro.Phase, ro.Wave, given)
	}
}
