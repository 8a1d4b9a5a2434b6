package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"ledge/agent/manifest"
)

// reconcile compares the desired deployment with the engine and acts:
// removes what is no longer wanted, pulls what is missing (in the
// background), creates, recreates and starts in startup order, and adopts
// containers that are already right without touching them.
func (r *reconciler) reconcile(ctx context.Context) {
	r.lastResync = r.now()
	if !r.connected || r.want == nil {
		return
	}
	list, err := r.eng.list(ctx)
	if err != nil {
		r.log.Warn("reconcile: list containers", "err", err)
		return
	}
	afterOutage := r.afterOutage
	r.afterOutage = false

	byModule := map[string]*containerInfo{}
	for i := range list {
		c := &list[i]
		if c.Module == "" || byModule[c.Module] != nil || r.mods[c.Module] == nil || r.mods[c.Module].def == nil {
			r.removeContainer(ctx, c, "not in the deployment")
			continue
		}
		byModule[c.Module] = c
	}
	// Forget modules that are gone from the deployment and the engine.
	for name, st := range r.mods {
		if st.def == nil {
			delete(r.mods, name)
			if err := r.store.deleteModule(context.WithoutCancel(ctx), name); err != nil {
				r.log.Error("forget module", "module", name, "err", err)
			}
			if r.identities != nil {
				if err := r.identities.RemoveModuleIdentity(ctx, name); err != nil {
					r.log.Warn("remove module identity", "module", name, "err", err)
				}
			}
			if r.workload != nil {
				r.workload.Remove(name)
			}
		}
	}

	order := r.sortedByStartup()
	if r.cfg.Network != "" && len(order) > 0 {
		gw, err := r.eng.ensureNetwork(ctx, r.cfg.Network)
		if err != nil {
			// Without the gateway the specs would differ and every module
			// be recreated: try again on the next pass.
			r.log.Warn("module network", "network", r.cfg.Network, "err", err)
			return
		}
		r.gateway = gw
	}
	for _, st := range order {
		st.c, st.waiting = byModule[st.name], ""
		spec, err := r.buildSpec(ctx, st.def)
		if err != nil {
			st.spec = nil
			var pe *privilegeError
			if errors.As(err, &pe) && st.c != nil {
				// A deployment persisted before the policy (or before it was
				// tightened): its container does not keep what is refused.
				r.removeContainer(ctx, st.c, "its elevated settings are refused")
				st.c = nil
			}
			r.failPermanently(ctx, st, err.Error())
			continue
		}
		st.spec = spec
	}
	// Pull everything missing at once (bounded), before starting anything,
	// so a slow image does not serialise the others.
	for _, st := range order {
		if st.spec != nil && (st.c == nil || st.c.Hash != st.spec.Hash) {
			r.ensureImage(ctx, st)
		}
	}
	// Start group by group: a group whose modules wait for their image
	// holds back the groups after it.
	blocked := ""
	for i := 0; i < len(order); {
		j := i
		for j < len(order) && order[j].def.StartupOrder == order[i].def.StartupOrder {
			j++
		}
		group := order[i:j]
		for _, st := range group {
			if st.spec != nil {
				r.converge(ctx, st, blocked, afterOutage)
			}
		}
		for _, st := range group {
			if blocked == "" && st.spec != nil && st.waiting != "" && !strings.HasPrefix(st.waiting, "waiting for") {
				blocked = fmt.Sprintf("waiting for %s (startupOrder %d) to start first", st.name, st.def.StartupOrder)
			}
		}
		i = j
	}
}

// buildSpec asks for the module's identity and builds its container spec.
func (r *reconciler) buildSpec(ctx context.Context, m *manifest.Module) (*containerSpec, error) {
	in := injection{instance: r.instance, prefix: r.cfg.ContainerPrefix, deviceID: r.deviceID,
		network: r.cfg.Network, gateway: r.gateway, logging: r.cfg.ModuleLogging, logOverride: r.want.man.Logging, policy: r.policy}
	if r.identities != nil {
		id, err := r.identities.ModuleIdentity(ctx, m.Name)
		if err != nil {
			return nil, fmt.Errorf("hub identity: %w", err)
		}
		ep := r.identities.Endpoint()
		in.identity, in.endpoint = &id, &ep
		if r.workload != nil {
			dir, err := r.workload.Ensure(m.Name, id.GenerationID)
			if err != nil {
				return nil, err
			}
			in.workloadDir = dir
		}
	}
	return buildSpec(m, in)
}

// converge brings one module's container in line with its spec.
func (r *reconciler) converge(ctx context.Context, st *modState, blocked string, afterOutage bool) {
	c := st.c
	needNew := c == nil || c.Hash != st.spec.Hash
	if needNew {
		if st.waiting == "" && blocked != "" {
			st.waiting = blocked // the image is here, the modules before are not
		}
		if st.waiting != "" {
			if c == nil && st.stats.Status != StatusFailed {
				r.setStatus(ctx, st, StatusUnknown, st.waiting)
			}
			return // the old container, if any, keeps running meanwhile
		}
		if c != nil {
			r.removeContainer(ctx, c, "its configuration changed")
			st.c = nil
		}
		r.create(ctx, st)
		return
	}
	st.waiting = ""
	if st.def.Status == manifest.StatusStopped {
		if c.Running {
			st.expectStop = true
			if err := r.eng.stop(ctx, c.ID, r.cfg.StopTimeout); err != nil {
				r.log.Warn("stop module", "module", st.name, "err", err)
			}
			r.refresh(ctx, st)
		}
		r.setStatus(ctx, st, StatusStopped, "stopped as the deployment asks")
		return
	}
	if c.Running {
		// Adopted as it is; nothing restarts.
		st.health = c.Health
		if st.stats.LastStart.IsZero() || !st.stats.LastStart.Equal(c.StartedAt) {
			st.stats.LastStart = c.StartedAt
		}
		if c.Health == "unhealthy" {
			if st.stats.Status == StatusBackoff && st.stats.ContainerID == c.ID {
				return // its restart is already scheduled
			}
			r.onUnhealthy(ctx, st)
			return
		}
		r.setStatus(ctx, st, StatusRunning, "running")
		return
	}
	r.notRunning(ctx, st, afterOutage)
}

// notRunning decides about a container that exists, is right, and does
// not run.
func (r *reconciler) notRunning(ctx context.Context, st *modState, afterOutage bool) {
	c := st.c
	sameExit := st.stats.ContainerID == c.ID && !c.FinishedAt.IsZero() && st.stats.LastExit.Equal(c.FinishedAt)
	outageStart := r.disconnectedAt.Add(-(r.cfg.StopTimeout + 15*time.Second))
	switch {
	case c.Status == "created":
		r.start(ctx, st, "started")
	case !c.FinishedAt.IsZero() && c.FinishedAt.Before(r.bootTime):
		// Stopped by a reboot of the machine, not by itself: start it,
		// whatever its policy (reference §7 #7).
		r.start(ctx, st, "started after the machine restarted")
	case afterOutage && !c.FinishedAt.Before(outageStart):
		// Stopped when the engine went away.
		r.start(ctx, st, "started after the Docker engine came back")
	case sameExit && (st.stats.Status == StatusBackoff || st.stats.Status == StatusFailed || st.stats.Status == StatusStopped):
		// The agent has already decided about this exit; the back-off
		// timer (if any) does the rest.
	default:
		// An exit the agent has not seen (it happened while ledge was
		// down): the restart policy decides.
		st.stats.ContainerID = c.ID
		r.onExit(ctx, st, c.ExitCode, c.FinishedAt, c.OOMKilled)
	}
}

// create makes a module's container and starts it if it should run.
func (r *reconciler) create(ctx context.Context, st *modState) {
	id, err := r.eng.create(ctx, st.spec)
	if err != nil {
		r.failPermanently(ctx, st, err.Error())
		return
	}
	r.watchProgress()
	st.stats = moduleStats{ContainerID: id}
	ci, err := r.eng.inspect(ctx, id)
	if err != nil {
		r.log.Warn("inspect new container", "module", st.name, "err", err)
		ci = containerInfo{ID: id, Name: st.spec.Name, Module: st.name, Hash: st.spec.Hash, Status: "created"}
	}
	st.c = &ci
	// A stop the agent expected was the old container's (whose exit event
	// may come now, ignored as another container's): this one's exit is
	// news.
	st.expectStop = false
	if st.def.Status == manifest.StatusStopped {
		r.setStatus(ctx, st, StatusStopped, "created; stopped as the deployment asks")
		return
	}
	r.start(ctx, st, "started")
}

// start starts the module's container.
func (r *reconciler) start(ctx context.Context, st *modState, why string) {
	if err := r.recheck(st); err != nil {
		// A path it binds or maps resolves to a refused one now: the
		// container goes (Docker would follow the link at start).
		r.log.Warn("module not started: its host paths are refused now", "module", st.name, "err", err)
		r.removeContainer(ctx, st.c, "a host path it binds or maps is refused now")
		st.c = nil
		r.failPermanently(ctx, st, err.Error())
		return
	}
	if err := r.eng.start(ctx, st.c.ID); err != nil {
		st.stats.LastExit = r.now()
		r.onFailedStart(ctx, st, err)
		return
	}
	r.refresh(ctx, st)
	if st.c != nil && st.c.Running {
		st.stats.LastStart = st.c.StartedAt
	} else {
		st.stats.LastStart = r.now()
	}
	st.health = ""
	if st.c != nil {
		st.health = st.c.Health
	}
	r.setStatus(ctx, st, StatusRunning, why)
	if st.c != nil && !st.c.Running {
		// Exited before we looked again: the die event will follow, but
		// make sure the exit is handled even if it does not.
		r.onExit(ctx, st, st.c.ExitCode, st.c.FinishedAt, st.c.OOMKilled)
	}
}

// recheck runs the privilege policy again over the host paths module
// st asked for, on the host as it is now, before its container starts.
func (r *reconciler) recheck(st *modState) error {
	if r.policy == nil || r.policy.AllowElevated || st.spec == nil || st.spec.own == nil {
		return nil
	}
	_, err := r.policy.check(st.name, nil, st.spec.own, nil)
	return err
}

// refresh re-reads the module's container.
func (r *reconciler) refresh(ctx context.Context, st *modState) {
	if st.c == nil {
		return
	}
	ci, err := r.eng.inspect(ctx, st.c.ID)
	if err != nil {
		return
	}
	st.c = &ci
}

// removeContainer stops and removes a container of this instance.
func (r *reconciler) removeContainer(ctx context.Context, c *containerInfo, why string) {
	if st := r.mods[c.Module]; st != nil && st.c != nil && st.c.ID == c.ID {
		st.expectStop = true
	}
	if c.Running {
		if err := r.eng.stop(ctx, c.ID, r.cfg.StopTimeout); err != nil {
			r.log.Warn("stop container", "container", c.Name, "err", err)
		}
	}
	if err := r.eng.remove(ctx, c.ID); err != nil {
		r.log.Warn("remove container", "container", c.Name, "err", err)
		return
	}
	r.log.Info("container removed", "container", c.Name, "module", c.Module, "reason", why)
	r.watchProgress()
}

// failPermanently marks a module failed for a reason retrying cannot fix
// (bad spec, create refused): the deployment fails without waiting.
func (r *reconciler) failPermanently(ctx context.Context, st *modState, reason string) {
	r.setStatus(ctx, st, StatusFailed, reason)
	if w := r.watch; w != nil && !w.done && !w.failed && w.failure == "" {
		w.failure = fmt.Sprintf("module %s: %s", st.name, reason)
	}
}

// watchProgress notes that the deployment moved forward.
func (r *reconciler) watchProgress() {
	if r.watch != nil {
		r.watch.lastProgress = r.now()
	}
}

// checkConvergence decides whether the current deployment has converged
// or failed. A failed deployment that is not rolled back is still
// watched: if it converges later, that is reported too.
func (r *reconciler) checkConvergence() {
	w := r.watch
	if w == nil || w.done || r.want == nil {
		return
	}
	ready, why := r.converged()
	if ready {
		w.done = true
		r.outcomes <- outcome{id: w.id, state: StateConverged}
		return
	}
	if w.failed {
		return
	}
	if r.sectionsProgress != nil {
		if p := r.sectionsProgress(); p != w.sectionWork {
			w.sectionWork, w.lastProgress = p, r.now()
		}
	}
	reason := w.failure
	if reason == "" && r.connected && r.now().Sub(w.lastProgress) >= r.cfg.Rollback.Timeout {
		reason = fmt.Sprintf("not converged after %s without progress: %s", r.cfg.Rollback.Timeout, why)
	}
	if reason != "" {
		w.failed = true
		r.outcomes <- outcome{id: w.id, state: StateFailed, reason: reason}
	}
}

// converged reports whether every module runs as asked (and has for
// StableFor) and every section is ready; if not, why.
func (r *reconciler) converged() (bool, string) {
	// A deployment without modules, on a ledge that knows of none (from
	// this deployment or an earlier one: they are in r.mods until removed
	// from the engine), asks nothing of Docker: it converges without it
	// (a Docker-less camera of a fleet gets pipelines only).
	if !r.connected && len(r.mods) > 0 {
		return false, "the Docker engine is unreachable"
	}
	now := r.now()
	for _, st := range r.sortedByStartup() {
		m, c := st.def, st.c
		switch {
		case st.spec == nil:
			return false, fmt.Sprintf("module %s: %s", st.name, st.stats.Description)
		case c == nil || c.Hash != st.spec.Hash:
			why := st.waiting
			if why == "" {
				why = "not created yet"
			}
			return false, fmt.Sprintf("module %s: %s", st.name, why)
		case m.Status == manifest.StatusStopped:
			if c.Running {
				return false, fmt.Sprintf("module %s still runs", st.name)
			}
		case st.stats.Status == StatusStopped && st.stats.ExitCode == 0 && m.RestartPolicy != manifest.RestartAlways:
			// A one-shot module that finished its work.
		case st.stats.Status != StatusRunning || !c.Running:
			return false, fmt.Sprintf("module %s is %s (%s)", st.name, st.stats.Status, st.stats.Description)
		case now.Sub(st.stats.LastStart) < r.cfg.Rollback.StableFor:
			return false, fmt.Sprintf("module %s has not run for %s yet", st.name, r.cfg.Rollback.StableFor)
		}
	}
	if r.sectionsReady != nil {
		ready, failed := r.sectionsReady()
		if failed != "" && r.watch != nil && r.watch.failure == "" {
			r.watch.failure = failed
		}
		if !ready {
			return false, "sections are not ready"
		}
	}
	return true, ""
}
