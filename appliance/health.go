package appliance

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"ledge/internal/outage"
	"ledge/web"
)

// healthSet holds the health checks of the components. Safe for concurrent
// use.
type healthSet struct {
	mu     sync.Mutex // guards checks and selfLogged
	checks map[string]func(context.Context) error
	// selfLogged are components that tell their own failures to the log
	// (the agent tells of the Docker engine); watch does not repeat them.
	selfLogged map[string]bool
}

// healthEvery is how often watch runs the checks.
const healthEvery = 15 * time.Second

// watch runs the checks at start and every healthEvery until ctx ends,
// and tells the log when a component starts failing (WARN) and when it
// recovers (INFO), rate-limited per component (the "health" component).
func (h *healthSet) watch(ctx context.Context, log *slog.Logger) error {
	logs := map[string]*outage.Log{}
	tick := time.NewTicker(healthEvery)
	defer tick.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, healthEvery)
		comps, _ := h.check(cctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		h.mu.Lock()
		quiet := h.selfLogged
		h.mu.Unlock()
		for _, c := range comps {
			if quiet[c.Name] {
				continue
			}
			l := logs[c.Name]
			if l == nil {
				l = outage.New(log.With("component", c.Name), c.Name, 0)
				logs[c.Name] = l
			}
			if c.Status == "ok" {
				l.OK()
			} else {
				l.Fail(c.Error)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func newHealthSet() *healthSet {
	return &healthSet{checks: map[string]func(context.Context) error{}}
}

func (h *healthSet) add(name string, check func(context.Context) error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, dup := h.checks[name]; dup || check == nil {
		panic("appliance: health check registered twice or nil: " + name)
	}
	h.checks[name] = check
}

// addSelfLogged adds a check of a component that logs its own failures.
func (h *healthSet) addSelfLogged(name string, check func(context.Context) error) {
	h.add(name, check)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.selfLogged == nil {
		h.selfLogged = map[string]bool{}
	}
	h.selfLogged[name] = true
}

// componentCheck is the outcome of one component's health check.
type componentCheck struct {
	name string
	err  error // nil: healthy
}

// run runs every check and returns their outcomes, sorted by name.
func (h *healthSet) run(ctx context.Context) []componentCheck {
	h.mu.Lock()
	names := slices.Sorted(maps.Keys(h.checks))
	checks := h.checks
	h.mu.Unlock()
	out := make([]componentCheck, 0, len(names))
	for _, n := range names {
		out = append(out, componentCheck{name: n, err: checks[n](ctx)})
	}
	return out
}

// check runs every check and returns a status per component, sorted by
// name, and whether all are healthy.
func (h *healthSet) check(ctx context.Context) ([]web.ComponentHealth, bool) {
	ok := true
	checks := h.run(ctx)
	out := make([]web.ComponentHealth, 0, len(checks))
	for _, c := range checks {
		s := web.ComponentHealth{Name: c.name, Status: "ok"}
		if c.err != nil {
			s.Status, s.Error, ok = "failing", c.err.Error(), false
		}
		out = append(out, s)
	}
	return out, ok
}
