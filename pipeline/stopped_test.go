package pipeline

import (
	"testing"
	"time"

	"ledge/pipeline/source"
)

// TestStoppedStaysStoppedWhenOthersChange: a pipeline the operator
// stopped stays stopped when the set is applied again with it unchanged
// (another pipeline added from the dashboard, a deployment); Start, or
// removing it and adding it back, runs it again.
func TestStoppedStaysStoppedWhenOthersChange(t *testing.T) {
	mk := func(name string) Spec { return Spec{Name: name, Source: source.Spec{URL: "testpattern:", FPS: 20}} }
	e := newTestEngine(t, []Spec{mk("a"), mk("b")}, nil)
	run(t, e)
	running := func(name string) bool { s, _ := e.PipelineStats(name); return s.Running }
	waitFor(t, 10*time.Second, "a and b to run", func() bool { return running("a") && running("b") })
	if err := e.Stop(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	// The appliance applies its layers whole: a comes back as it was.
	if err := e.Apply(t.Context(), []Spec{mk("a"), mk("b"), mk("c")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "c to run", func() bool { return running("c") })
	if s, _ := e.PipelineStats("a"); s.Running || s.State != StateStopped {
		t.Errorf("a stopped by the operator runs again after another pipeline was added: %+v", s)
	}
	if err := e.Start(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a to run after Start", func() bool { return running("a") })
	// Stopped, removed, added back: a new pipeline, which runs.
	if err := e.Stop(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	if err := e.Apply(t.Context(), []Spec{mk("b")}); err != nil {
		t.Fatal(err)
	}
	if err := e.Apply(t.Context(), []Spec{mk("a"), mk("b")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a added back to run", func() bool { return running("a") })
}
