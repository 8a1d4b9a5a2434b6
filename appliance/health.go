package appliance

import (
	"ledge/web"

	"context"
	"sort"
	"sync"
)

// healthSet holds the health checks of the components. Safe for concurrent
// use.
type healthSet struct {
	mu     sync.Mutex // guards checks
	checks map[string]func(context.Context) error
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

// componentCheck is the outcome of one component's health check.
type componentCheck struct {
	name string
	err  error // nil: healthy
}

// run runs every check and returns their outcomes, sorted by name.
func (h *healthSet) run(ctx context.Context) []componentCheck {
	h.mu.Lock()
	names := make([]string, 0, len(h.checks))
	for n := range h.checks {
		names = append(names, n)
	}
	checks := h.checks
	h.mu.Unlock()
	sort.Strings(names)
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
