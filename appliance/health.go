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

// check runs every check and returns a status per component, sorted by
// name, and whether all are healthy.
func (h *healthSet) check(ctx context.Context) ([]web.ComponentHealth, bool) {
	h.mu.Lock()
	names := make([]string, 0, len(h.checks))
	for n := range h.checks {
		names = append(names, n)
	}
	checks := h.checks
	h.mu.Unlock()
	sort.Strings(names)
	ok := true
	out := make([]web.ComponentHealth, 0, len(names))
	for _, n := range names {
		c := web.ComponentHealth{Name: n, Status: "ok"}
		if err := checks[n](ctx); err != nil {
			c.Status, c.Error, ok = "failing", err.Error(), false
		}
		out = append(out, c)
	}
	return out, ok
}
