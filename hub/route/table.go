package route

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"ledge/internal/fault"
)

// Spec is a route as a manifest gives it: the legacy string form (only
// Route set) or the object form {"route", "priority", "timeToLiveSecs"}.
type Spec struct {
	Route          string `json:"route" yaml:"route"`
	Priority       *int   `json:"priority,omitempty" yaml:"priority,omitempty"`
	TimeToLiveSecs *int64 `json:"timeToLiveSecs,omitempty" yaml:"timeToLiveSecs,omitempty"`
}

// MaxTTLSecs is the largest timeToLiveSecs a route may set (edgeHub's
// uint32 limit).
const MaxTTLSecs = 4294967295

// Delivery is one sink a message goes to.
type Delivery struct {
	Sink Sink
	// Priority is the highest priority (lowest number) among the routes
	// that matched for this sink, and TTL the TTL those routes set (the
	// longest when several at that priority set one; 0 when none does,
	// meaning the global TTL).
	Priority int
	TTL      time.Duration
	// Routes names the routes that matched for this sink, sorted. The
	// slice may be shared: do not modify it.
	Routes []string
}

// Table is an immutable set of routes, safe for concurrent use. The hub
// builds a new one on every configuration change and swaps it whole.
type Table struct {
	routes []*Route // sorted by name
	sinks  []Sink   // distinct, sorted by String()
	sinkOf []int    // sinkOf[i]: index in sinks of routes[i].Sink
}

// NewTable parses and validates every route: names match ^[^.$# ]+$,
// priority is 0..9, timeToLiveSecs is 0..MaxTTLSecs. On any error nothing is
// built and the error, of kind fault.Invalid, lists every bad route by name
// (sorted); errors.As finds the *ParseError of the first unparsable one.
func NewTable(specs map[string]Spec) (*Table, error) {
	names := make([]string, 0, len(specs))
	for name := range specs {
		names = append(names, name)
	}
	sort.Strings(names)
	t := &Table{}
	var errs []error
	for _, name := range names {
		r, err := newRoute(name, specs[name])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		t.routes = append(t.routes, r)
	}
	if len(errs) > 0 {
		return nil, fault.Wrap(fault.Invalid, errors.Join(errs...))
	}
	keys := map[string]int{}
	for _, r := range t.routes {
		k := r.Sink.String()
		if _, ok := keys[k]; !ok {
			keys[k] = len(t.sinks)
			t.sinks = append(t.sinks, r.Sink)
		}
	}
	sort.Slice(t.sinks, func(i, j int) bool { return t.sinks[i].String() < t.sinks[j].String() })
	for i, s := range t.sinks {
		keys[s.String()] = i
	}
	t.sinkOf = make([]int, len(t.routes))
	for i, r := range t.routes {
		t.sinkOf[i] = keys[r.Sink.String()]
	}
	return t, nil
}

func newRoute(name string, s Spec) (*Route, error) {
	if name == "" || strings.ContainsAny(name, ".$# ") {
		return nil, fmt.Errorf("route %q: a route name must not be empty or contain '.', '$', '#' or a space", name)
	}
	r, err := Parse(name, s.Route)
	if err != nil {
		return nil, err
	}
	if s.Priority != nil {
		if *s.Priority < 0 || *s.Priority > 9 {
			return nil, fmt.Errorf("route %q: priority %d is out of range 0..9", name, *s.Priority)
		}
		r.Priority = *s.Priority
	}
	if s.TimeToLiveSecs != nil {
		if *s.TimeToLiveSecs < 0 || *s.TimeToLiveSecs > MaxTTLSecs {
			return nil, fmt.Errorf("route %q: timeToLiveSecs %d is out of range 0..%d", name, *s.TimeToLiveSecs, int64(MaxTTLSecs))
		}
		r.TTL = time.Duration(*s.TimeToLiveSecs) * time.Second
	}
	return r, nil
}

// Routes returns the routes sorted by name. Do not modify them.
func (t *Table) Routes() []*Route {
	if t == nil {
		return nil
	}
	return append([]*Route(nil), t.routes...)
}

// Sinks returns the distinct sinks of the routes, sorted by String().
func (t *Table) Sinks() []Sink {
	if t == nil {
		return nil
	}
	return append([]Sink(nil), t.sinks...)
}

// acc gathers the routes that matched for one sink.
type acc struct {
	sink, prio, n, first int
	ttl                  time.Duration
}

// Match returns one Delivery per distinct sink of the routes that match m,
// ordered by priority and then by sink; nil when none matches. A nil table
// matches nothing.
func (t *Table) Match(m *Message) []Delivery {
	if t == nil || len(t.routes) == 0 {
		return nil
	}
	if m == nil {
		m = &emptyMessage
	}
	ctx := evalCtx{m: m}
	var buf [8]acc
	accs := buf[:0]
	var matched [32]bool
	var hit []bool
	if len(t.routes) <= len(matched) {
		hit = matched[:len(t.routes)]
	} else {
		hit = make([]bool, len(t.routes))
	}
	for i, r := range t.routes {
		if !matchSource(r.srcCmp, m.Source) {
			continue
		}
		if r.cond != nil && !r.cond.root.eval(&ctx).IsTrue() {
			continue
		}
		hit[i] = true
		s := t.sinkOf[i]
		k := 0
		for k < len(accs) && accs[k].sink != s {
			k++
		}
		if k == len(accs) {
			accs = append(accs, acc{sink: s, prio: r.Priority, first: i, ttl: r.TTL, n: 1})
			continue
		}
		a := &accs[k]
		a.n++
		switch {
		case r.Priority < a.prio:
			a.prio, a.ttl = r.Priority, r.TTL
		case r.Priority == a.prio && r.TTL > a.ttl:
			a.ttl = r.TTL
		}
	}
	if len(accs) == 0 {
		return nil
	}
	// Insertion sort by (priority, sink); sink indexes follow Sink.String()
	// order. A handful of elements.
	for i := 1; i < len(accs); i++ {
		for j := i; j > 0 && (accs[j].prio < accs[j-1].prio || accs[j].prio == accs[j-1].prio && accs[j].sink < accs[j-1].sink); j-- {
			accs[j], accs[j-1] = accs[j-1], accs[j]
		}
	}
	out := make([]Delivery, len(accs))
	for k, a := range accs {
		d := Delivery{Sink: t.sinks[a.sink], Priority: a.prio, TTL: a.ttl}
		if a.n == 1 {
			d.Routes = t.routes[a.first].names
		} else {
			d.Routes = make([]string, 0, a.n)
			for i := a.first; i < len(t.routes); i++ {
				if hit[i] && t.sinkOf[i] == a.sink {
					d.Routes = append(d.Routes, t.routes[i].Name)
				}
			}
		}
		out[k] = d
	}
	return out
}
