package agent

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/events"

	"ledge/agent/manifest"
)

// backoff is the wait before restart number n (from 0): Unit * 2^n, at
// most Max (reference §2.3: 10 s, 20 s, 40 s ... 5 min).
func backoff(cfg RestartConfig, n int) time.Duration {
	d := cfg.Unit
	for i := 0; i < n && d < cfg.Max; i++ {
		d *= 2
	}
	return min(d, cfg.Max)
}

// shouldRestart applies a restart policy to an exit (reference §2.3; the
// policies are ordered never < on-failure < on-unhealthy < always).
func shouldRestart(p manifest.RestartPolicy, exitCode int, unhealthy bool) bool {
	switch {
	case unhealthy:
		return p.Rank() >= manifest.RestartOnUnhealthy.Rank()
	case exitCode != 0:
		return p.Rank() >= manifest.RestartOnFailure.Rank()
	}
	return p == manifest.RestartAlways
}

// onExit applies the module's restart policy to an exit.
func (r *reconciler) onExit(ctx context.Context, st *modState, code int, at time.Time, oom bool) {
	if at.IsZero() {
		at = r.now()
	}
	st.stats.ExitCode, st.stats.LastExit = code, at
	if st.c != nil {
		st.c.Running = false
		st.stats.ContainerID = st.c.ID
	}
	desc := fmt.Sprintf("exited with code %d", code)
	if oom {
		desc += " (out of memory)"
	}
	r.scheduleRestart(ctx, st, code, false, desc)
}

// scheduleRestart puts a module that stopped or turned unhealthy in
// back-off, or reports it stopped or failed when its policy (or the
// attempt cap) says so.
func (r *reconciler) scheduleRestart(ctx context.Context, st *modState, code int, unhealthy bool, desc string) {
	if st.def == nil {
		return
	}
	// A module that stayed up long enough starts over (Azure's intensive
	// care time).
	if !st.stats.LastStart.IsZero() && st.stats.LastExit.Sub(st.stats.LastStart) >= r.cfg.Restart.ResetAfter {
		st.stats.RestartCount = 0
	}
	if st.def.Status == manifest.StatusStopped {
		r.setStatus(ctx, st, StatusStopped, desc)
		return
	}
	if !shouldRestart(st.def.RestartPolicy, code, unhealthy) {
		status := StatusFailed
		if code == 0 && !unhealthy {
			status = StatusStopped
		}
		r.setStatus(ctx, st, status, desc+"; restart policy "+string(st.def.RestartPolicy)+" does not restart it")
		return
	}
	if max := r.cfg.Restart.MaxAttempts; max > 0 && st.stats.RestartCount >= max {
		r.setStatus(ctx, st, StatusFailed, fmt.Sprintf("%s; gave up after %d restarts (agent.restart.maxAttempts)", desc, st.stats.RestartCount))
		return
	}
	wait := backoff(r.cfg.Restart, st.stats.RestartCount)
	from := st.stats.LastExit
	if from.IsZero() || from.After(r.now()) {
		from = r.now()
	}
	st.stats.NextRestart = from.Add(wait)
	r.setStatus(ctx, st, StatusBackoff, fmt.Sprintf("%s; restart %d in %s", desc, st.stats.RestartCount+1, wait))
}

// restart starts a module whose back-off is over.
func (r *reconciler) restart(ctx context.Context, st *modState) {
	if st.c == nil || st.spec == nil {
		r.reconcile(ctx) // its container went away: make a new one
		return
	}
	if st.c.Running {
		st.expectStop = true
		if err := r.eng.stop(ctx, st.c.ID, r.cfg.StopTimeout); err != nil {
			r.log.Warn("stop unhealthy module", "module", st.name, "err", err)
		}
	}
	st.stats.RestartCount++
	st.stats.LastRestart = r.now()
	r.count.restarts.Add(1)
	r.start(ctx, st, fmt.Sprintf("restarted (restart %d)", st.stats.RestartCount))
}

// onFailedStart handles a container the engine refused to start.
func (r *reconciler) onFailedStart(ctx context.Context, st *modState, err error) {
	// setStatus tells the log: a WARN for the first failure (with this
	// reason), INFO lines for the attempts after it.
	r.log.Debug("start module", "module", st.name, "err", err)
	r.refresh(ctx, st)
	r.scheduleRestart(ctx, st, 128, false, "start failed: "+err.Error())
}

// onUnhealthy handles a failing health check.
func (r *reconciler) onUnhealthy(ctx context.Context, st *modState) {
	st.health = "unhealthy"
	if st.def == nil || !shouldRestart(st.def.RestartPolicy, 0, true) {
		r.setStatus(ctx, st, StatusUnhealthy, "health check failing")
		return
	}
	// Restarted after the back-off; until then it keeps running, reported
	// unhealthy.
	st.stats.LastExit = r.now()
	if !st.stats.LastStart.IsZero() && st.stats.LastExit.Sub(st.stats.LastStart) >= r.cfg.Restart.ResetAfter {
		st.stats.RestartCount = 0
	}
	if max := r.cfg.Restart.MaxAttempts; max > 0 && st.stats.RestartCount >= max {
		r.setStatus(ctx, st, StatusFailed, fmt.Sprintf("health check failing; gave up after %d restarts", st.stats.RestartCount))
		return
	}
	wait := backoff(r.cfg.Restart, st.stats.RestartCount)
	st.stats.NextRestart = r.now().Add(wait)
	r.setStatus(ctx, st, StatusBackoff, fmt.Sprintf("health check failing; restart %d in %s", st.stats.RestartCount+1, wait))
}

// handleEvent follows a container event of this instance.
func (r *reconciler) handleEvent(ctx context.Context, ev *events.Message) {
	name := ev.Actor.Attributes[labelModule]
	st := r.mods[name]
	if st == nil || st.c == nil || st.c.ID != ev.Actor.ID {
		if ev.Action == events.ActionDestroy || ev.Action == events.ActionCreate {
			return // ours, or an old container
		}
		return
	}
	switch {
	case ev.Action == events.ActionStart:
		r.refresh(ctx, st)
	case ev.Action == events.ActionDie:
		code, _ := strconv.Atoi(ev.Actor.Attributes["exitCode"])
		at := time.Unix(0, ev.TimeNano)
		r.refresh(ctx, st)
		oom := false
		if st.c != nil {
			if st.c.Running && st.c.StartedAt.After(at) {
				st.expectStop = false // an old exit: it runs again already
				return
			}
			st.c.Running = false
			if !st.c.FinishedAt.IsZero() {
				at = st.c.FinishedAt
			}
			oom = st.c.OOMKilled
		}
		if st.expectStop {
			st.expectStop = false
			st.stats.ExitCode, st.stats.LastExit = code, at
			r.saveStats(ctx, st)
			return
		}
		r.onExit(ctx, st, code, at, oom)
	case ev.Action == events.ActionHealthStatusUnhealthy:
		if st.stats.Status == StatusRunning {
			r.onUnhealthy(ctx, st)
		}
	case ev.Action == events.ActionHealthStatusHealthy:
		st.health = "healthy"
		if st.stats.Status == StatusUnhealthy {
			r.setStatus(ctx, st, StatusRunning, "health check passing again")
		}
	case ev.Action == events.ActionDestroy:
		// Removed behind the agent's back: make it again.
		st.c = nil
		r.reconcile(ctx)
	case strings.HasPrefix(string(ev.Action), string(events.ActionHealthStatus)):
		st.health = strings.TrimSpace(strings.TrimPrefix(string(ev.Action), string(events.ActionHealthStatus)+":"))
	}
}

// bootTime is when the machine started (Linux /proc/stat btime).
func bootTime() time.Time {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
				return time.Unix(n, 0)
			}
		}
	}
	return time.Time{}
}
