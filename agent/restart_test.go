package agent

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"ledge/agent/manifest"
)

func TestBackoff(t *testing.T) {
	cfg := RestartConfig{Unit: 10 * time.Second, Max: 5 * time.Minute}
	want := []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 300 * time.Second, 300 * time.Second}
	for n, w := range want {
		if got := backoff(cfg, n); got != w {
			t.Errorf("backoff(%d) = %s, want %s", n, got, w)
		}
	}
	if got := backoff(cfg, 1000); got != 5*time.Minute {
		t.Errorf("backoff(1000) = %s", got)
	}
}

func TestShouldRestart(t *testing.T) {
	for _, tc := range []struct {
		p         manifest.RestartPolicy
		code      int
		unhealthy bool
		want      bool
	}{
		{manifest.RestartNever, 1, false, false},
		{manifest.RestartNever, 0, true, false},
		{manifest.RestartOnFailure, 1, false, true},
		{manifest.RestartOnFailure, 0, false, false},
		{manifest.RestartOnFailure, 0, true, false},
		{manifest.RestartOnUnhealthy, 0, true, true},
		{manifest.RestartOnUnhealthy, 2, false, true},
		{manifest.RestartOnUnhealthy, 0, false, false},
		{manifest.RestartAlways, 0, false, true},
		{manifest.RestartAlways, 137, false, true},
		{manifest.RestartAlways, 0, true, true},
	} {
		if got := shouldRestart(tc.p, tc.code, tc.unhealthy); got != tc.want {
			t.Errorf("shouldRestart(%s, %d, unhealthy=%v) = %v, want %v", tc.p, tc.code, tc.unhealthy, got, tc.want)
		}
	}
}

// TestCrashLoopBackoff: a module that crashes at once is restarted
// forever ("always" has no attempt cap by default), reported in backoff
// with waits doubling from the unit, and the real gaps between its
// starts grow accordingly.
func TestCrashLoopBackoff(t *testing.T) {
	ta := newTestAgent(t)
	events, cancel := ta.Events(256)
	defer cancel()
	ta.apply(manifestYAML("1", "crasher "+imgApp+" always 0 crash"))

	var waits []float64
	var starts []time.Time
	deadline := time.After(30 * time.Second)
	for len(waits) < 5 {
		select {
		case e := <-events:
			if e.Kind != EventModule || e.Module != "crasher" {
				continue
			}
			switch e.RuntimeStatus {
			case StatusBackoff:
				waits = append(waits, e.BackoffSeconds)
			case StatusRunning:
				starts = append(starts, e.Time)
			}
		case <-deadline:
			t.Fatalf("saw backoffs %v, starts %v", waits, starts)
		}
	}
	want := []float64{0.1, 0.2, 0.4, 0.8, 1.6}
	for i, w := range want {
		if d := waits[i] - w; d > 0.001 || d < -0.001 {
			t.Errorf("backoff %d = %.3fs, want %.1fs (all: %v)", i, waits[i], w, waits)
		}
	}
	// The gap between start n and n+1 is at least the n-th wait.
	for i := 1; i < len(starts) && i < len(waits); i++ {
		if gap := starts[i].Sub(starts[i-1]).Seconds(); gap < waits[i-1] {
			t.Errorf("restart %d came %.3fs after the previous start, before its back-off of %.1fs", i, gap, waits[i-1])
		}
	}
	// The reported state is published after the events that led to it:
	// wait for it to catch up with the fourth restart instead of reading it
	// once.
	var rep ModuleReport
	waitFor(t, 10*time.Second, func() (bool, string) {
		rep = ta.Reported().Modules["crasher"]
		return rep.RestartCount >= 4, fmt.Sprintf("reported restart count %d, want >= 4", rep.RestartCount)
	})
	if rep.RestartCount < 4 || rep.ExitCode != 3 || rep.LastExitTimeUtc == "" || rep.LastRestartTimeUtc == "" {
		t.Errorf("reported %+v", rep)
	}
	if rep.RuntimeStatus != StatusBackoff && rep.RuntimeStatus != StatusRunning {
		t.Errorf("crasher is %s, want backoff or running", rep.RuntimeStatus)
	}
}

// TestRestartPolicies: each policy against exit codes and a failing
// health check, plus the optional attempt cap.
func TestRestartPolicies(t *testing.T) {
	ta := newTestAgent(t, withConfig(func(c *Config) { c.Restart.MaxAttempts = 2 }))
	ta.apply(manifestYAML("1",
		"clean "+imgApp+" on-failure 0 exit 0",
		"oneshot "+imgApp+" never 0 exit 0",
		"broken "+imgApp+" never 0 exit 7",
		"retry "+imgApp+" on-failure 0 exit 2",
		"capped "+imgApp+" always 0 crash",
		"sick "+imgHealth+" on-unhealthy 0 unhealthy 1s",
		"sickkept "+imgHealth+" on-failure 0 unhealthy 1s"))
	waitFor(t, 40*time.Second, func() (bool, string) {
		rep := ta.Reported()
		m := rep.Modules
		ok := m["clean"].RuntimeStatus == StatusStopped && m["oneshot"].RuntimeStatus == StatusStopped &&
			m["broken"].RuntimeStatus == StatusFailed && m["broken"].ExitCode == 7 &&
			m["retry"].RestartCount >= 2 && m["retry"].RuntimeStatus == StatusFailed &&
			m["capped"].RuntimeStatus == StatusFailed && m["capped"].RestartCount == 2 &&
			m["sick"].RestartCount >= 1 &&
			m["sickkept"].RuntimeStatus == StatusUnhealthy && m["sickkept"].RestartCount == 0
		return ok, moduleSummary(rep) + fmt.Sprintf(" sick restarts=%d", m["sick"].RestartCount)
	})
	cs := ta.containers()
	if !cs["sickkept"].Running {
		t.Error("an unhealthy module whose policy does not restart it was stopped")
	}
	if cs["clean"].Running || cs["broken"].Running {
		t.Error("exited modules run again")
	}
}

// TestCrashLoopLoggedOnce: a module that crashes over and over is a
// WARN in the log once, with its reason, not once per crash (each
// crash and restart are INFO lines, the dashboard and status count the
// restarts); once it has run for rollback.stableFor, its recovery is an
// INFO line that says after how many restarts.
func TestCrashLoopLoggedOnce(t *testing.T) {
	ta := newTestAgent(t)
	mark := ta.mark()
	ta.apply(manifestYAML("1", "crasher "+imgApp+" always 0 crashes 4"))
	ta.waitLog(mark, 30*time.Second, "msg=\"module recovered\"", "module=crasher", "restarts=4")
	var warns []string
	for line := range strings.Lines(ta.logs.String()[mark:]) {
		if strings.Contains(line, "level=WARN") && strings.Contains(line, "module=crasher") {
			warns = append(warns, line)
		}
	}
	if len(warns) != 1 || !strings.Contains(warns[0], "exited with code 3") {
		t.Errorf("%d WARN lines of the crash loop, want 1 with the exit code:\n%s", len(warns), strings.Join(warns, ""))
	}
	// A new deployment is a new attempt: its first failure is a WARN
	// again, even while the module of the one before still crash-loops.
	mark = ta.mark()
	ta.apply(manifestYAML("2", "crasher "+imgApp+" always 0 crash"))
	ta.waitLog(mark, 30*time.Second, "level=INFO", "module=crasher", "status=backoff")
	mark = ta.mark()
	ta.apply(manifestYAML("3", "crasher "+imgApp+" always 0 exit 4"))
	ta.waitLog(mark, 30*time.Second, "level=WARN", "module=crasher", "exited with code 4")
}

// TestStartFailureLoggedOnce: a module the engine refuses to start (its
// entrypoint is not in the image) is retried with back-off forever; the
// log says so once, at WARN with the engine's reason, and the attempts
// that fail the same way are INFO lines (the restart count and the reason
// are in the module's status), not a WARN per attempt.
func TestStartFailureLoggedOnce(t *testing.T) {
	ta := newTestAgent(t)
	mark := ta.mark()
	ta.apply("version: \"1\"\nmodules:\n  nostart:\n    image: " + imgApp +
		"\n    restartPolicy: always\n    imagePullPolicy: never\n    createOptions: {Entrypoint: [/nonexistent]}\n")
	waitFor(t, 40*time.Second, func() (bool, string) {
		n := strings.Count(ta.logs.String()[mark:], "start failed")
		return n >= 3, fmt.Sprintf("%d failed starts logged, want 3", n)
	})
	var warns []string
	for line := range strings.Lines(ta.logs.String()[mark:]) {
		if strings.Contains(line, "level=WARN") && strings.Contains(line, "module=nostart") {
			warns = append(warns, line)
		}
	}
	if len(warns) != 1 || !strings.Contains(warns[0], "/nonexistent") {
		t.Errorf("%d WARN lines for a module that cannot start, want 1 with the engine's reason:\n%s", len(warns), strings.Join(warns, ""))
	}
	waitFor(t, 10*time.Second, func() (bool, string) {
		m := ta.Reported().Modules["nostart"]
		return m.RuntimeStatus == StatusBackoff && strings.Contains(m.StatusDescription, "/nonexistent"),
			fmt.Sprintf("nostart is %s (%q), want backoff with the engine's reason", m.RuntimeStatus, m.StatusDescription)
	})
}

// TestPullFailureLoggedOnce: an image that cannot be pulled (a registry
// that does not answer) is a WARN once with the engine's reason; the
// retries that fail the same way are INFO lines, not a WARN a minute
// for as long as the registry is away.
func TestPullFailureLoggedOnce(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	registry := l.Addr().String()
	l.Close()
	ta := newTestAgent(t)
	mark := ta.mark()
	img := registry + "/ledge-none/web:1"
	ta.apply("version: \"1\"\nmodules:\n  web: {image: " + img + "}\n")
	waitFor(t, 30*time.Second, func() (bool, string) {
		n := strings.Count(ta.logs.String()[mark:], `msg="image pull failed"`)
		return n >= 2, fmt.Sprintf("%d failed pulls logged, want 2", n)
	})
	var warns []string
	for line := range strings.Lines(ta.logs.String()[mark:]) {
		if strings.Contains(line, "level=WARN") && strings.Contains(line, registry) {
			warns = append(warns, line)
		}
	}
	if len(warns) != 1 {
		t.Errorf("%d WARN lines for the same failed pull, want 1:\n%s", len(warns), strings.Join(warns, ""))
	}
}

// TestRecreatedModuleCrashNoticed: a module recreated by a new deployment
// (another command) whose new container exits at once is seen to exit,
// reported in backoff and restarted. The agent's stop of the old
// container was still expected, its exit event ignored as another
// container's, and the new container's exit taken for it: the module
// stayed "running" while it was not, and was never restarted.
func TestRecreatedModuleCrashNoticed(t *testing.T) {
	ta := newTestAgent(t)
	ta.apply(manifestYAML("1", "crasher "+imgApp+" always 0 forever"))
	ta.waitState("1", StateConverged, 30*time.Second)
	mark := ta.mark()
	ta.apply(manifestYAML("2", "crasher "+imgApp+" always 0 crash"))
	ta.waitLog(mark, 20*time.Second, "module=crasher", "status=backoff", "exited with code 3")
}
