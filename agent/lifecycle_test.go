package agent

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"ledge/internal/fault"
)

// TestDeploymentLifecycle: a fresh deployment of three modules starts
// them in startupOrder; changing one module's image recreates only that
// one; removing a module removes its container; the others are never
// restarted along the way.
func TestDeploymentLifecycle(t *testing.T) {
	ta := newTestAgent(t)

	// Names sort against their start order, so order comes from
	// startupOrder alone.
	ta.apply(manifestYAML("1",
		"alpha "+imgApp+" always 2",
		"bravo "+imgApp+" always 0",
		"charlie "+imgApp+" always 1"))
	rep := ta.waitState("1", StateConverged, 30*time.Second)
	first := ta.containers()
	if len(first) != 3 {
		t.Fatalf("want 3 containers, got %v", first)
	}
	b, c, a := first["bravo"], first["charlie"], first["alpha"]
	if !(b.StartedAt.Before(c.StartedAt) && c.StartedAt.Before(a.StartedAt)) {
		t.Errorf("start order: bravo %s, charlie %s, alpha %s; want bravo < charlie < alpha",
			b.StartedAt.Format(time.StampMicro), c.StartedAt.Format(time.StampMicro), a.StartedAt.Format(time.StampMicro))
	}
	for name, m := range rep.Modules {
		if m.RuntimeStatus != StatusRunning || m.ContainerID != first[name].ID || m.LastStartTimeUtc == "" {
			t.Errorf("reported %s: %+v", name, m)
		}
	}
	if c := first["alpha"]; c.Name != ta.prefix+"alpha" || c.Labels[labelHash] == "" || c.Host.RestartPolicy.Name != "no" ||
		c.Host.LogConfig.Type != "json-file" || c.Host.LogConfig.Config["max-size"] != "10m" {
		t.Errorf("alpha container: name %s labels %v restart %+v log %+v", c.Name, c.Labels, c.Host.RestartPolicy, c.Host.LogConfig)
	}

	// Change charlie's image: only charlie is recreated.
	ta.apply(manifestYAML("2",
		"alpha "+imgApp+" always 2",
		"bravo "+imgApp+" always 0",
		"charlie "+imgApp2+" always 1"))
	ta.waitState("2", StateConverged, 30*time.Second)
	second := ta.containers()
	for _, name := range []string{"alpha", "bravo"} {
		if second[name].ID != first[name].ID || !second[name].StartedAt.Equal(first[name].StartedAt) {
			t.Errorf("%s was touched: %s started %s, before %s started %s", name, second[name].ID[:12], second[name].StartedAt,
				first[name].ID[:12], first[name].StartedAt)
		}
	}
	if second["charlie"].ID == first["charlie"].ID || second["charlie"].Image != imgApp2 || !second["charlie"].Running {
		t.Errorf("charlie not recreated with the new image: %+v", second["charlie"])
	}

	// A policy change alone does not recreate.
	ta.apply(manifestYAML("3",
		"alpha "+imgApp+" on-failure 2",
		"bravo "+imgApp+" always 0",
		"charlie "+imgApp2+" always 1"))
	ta.waitState("3", StateConverged, 30*time.Second)
	if third := ta.containers(); third["alpha"].ID != second["alpha"].ID {
		t.Error("a restart policy change recreated alpha")
	}

	// Remove bravo.
	ta.apply(manifestYAML("4",
		"alpha "+imgApp+" on-failure 2",
		"charlie "+imgApp2+" always 1"))
	ta.waitState("4", StateConverged, 30*time.Second)
	fourth := ta.containers()
	if _, ok := fourth["bravo"]; ok || len(fourth) != 2 {
		t.Errorf("bravo not removed: %v", fourth)
	}
	if fourth["alpha"].ID != second["alpha"].ID || fourth["charlie"].ID != second["charlie"].ID {
		t.Error("removing bravo touched the others")
	}
	if _, ok := ta.Reported().Modules["bravo"]; ok {
		t.Error("bravo still reported")
	}
	// Restart by request: same container, started again, not counted as
	// a failure; its output is there.
	if err := ta.RestartModule(t.Context(), "alpha"); err != nil {
		t.Fatal(err)
	}
	again := ta.containers()["alpha"]
	if again.ID != fourth["alpha"].ID || !again.StartedAt.After(fourth["alpha"].StartedAt) || !again.Running {
		t.Errorf("restart by request: %+v (was started %s)", again, fourth["alpha"].StartedAt)
	}
	if m := ta.Reported().Modules["alpha"]; m.RestartCount != 0 || m.RuntimeStatus != StatusRunning || m.LastRestartTimeUtc == "" {
		t.Errorf("after a requested restart: %+v", m)
	}
	// The restarted container writes its second "up" when it runs, which
	// under load can be after RestartModule returns.
	waitFor(t, 30*time.Second, func() (bool, string) {
		out, err := ta.ModuleLogs(t.Context(), "alpha", 10)
		return err == nil && strings.Contains(string(out), "up\nup\n"), fmt.Sprintf("logs: %q, %v", out, err)
	})
	if err := ta.RestartModule(t.Context(), "bravo"); !fault.Is(err, fault.NotFound) {
		t.Errorf("restarting a removed module: %v", err)
	}
	hist, err := ta.History(t.Context(), 10)
	if err != nil || len(hist) != 4 || hist[0].State != StateConverged || hist[1].State != StateSuperseded {
		t.Errorf("history: %+v %v", hist, err)
	}
}
