// Package route is a TEMPORARY stand-in with the agreed API until the real
// route package (written in parallel) is merged; delete this file then.
// It parses only "FROM <source> INTO <sink>" without WHERE.
package route

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

type Message struct {
	Source string
	Body   []byte
	App    map[string]string
	Sys    map[string]string
}

type Sink struct {
	Upstream      bool
	Module, Input string
}

func (s Sink) String() string {
	if s.Upstream {
		return "$upstream"
	}
	return "/modules/" + s.Module + "/inputs/" + s.Input
}

type Route struct {
	Name, Text, Source string
	Sink               Sink
	Priority           int
	TTL                time.Duration
}

const DefaultPriority = 10

type Spec struct {
	Route          string
	Priority       *int
	TimeToLiveSecs *int64
}

type ParseError struct {
	Name string
	Pos  int
	Msg  string
}

func (e *ParseError) Error() string { return fmt.Sprintf("route %q at %d: %s", e.Name, e.Pos, e.Msg) }

func Parse(name, text string) (*Route, error) {
	f := strings.Fields(text)
	if len(f) != 4 || !strings.EqualFold(f[0], "FROM") || !strings.EqualFold(f[2], "INTO") {
		return nil, &ParseError{name, 0, "stub parses only FROM <source> INTO <sink>"}
	}
	r := &Route{Name: name, Text: text, Source: f[1], Priority: DefaultPriority}
	switch s := f[3]; {
	case strings.EqualFold(s, "$upstream"):
		r.Sink.Upstream = true
	case strings.HasPrefix(strings.ToLower(s), "brokeredendpoint("):
		arg := strings.Trim(s[len("brokeredendpoint("):], `)"' `)
		p := strings.Split(strings.Trim(arg, "/"), "/")
		if len(p) != 4 {
			return nil, &ParseError{name, 0, "bad endpoint"}
		}
		r.Sink.Module, r.Sink.Input = p[1], p[3]
	default:
		return nil, &ParseError{name, 0, "bad sink"}
	}
	return r, nil
}

type Table struct{ routes []*Route }

func NewTable(specs map[string]Spec) (*Table, error) {
	t := &Table{}
	var errs []error
	for n, s := range specs {
		r, err := Parse(n, s.Route)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if s.Priority != nil {
			r.Priority = *s.Priority
		}
		if s.TimeToLiveSecs != nil {
			r.TTL = time.Duration(*s.TimeToLiveSecs) * time.Second
		}
		t.routes = append(t.routes, r)
	}
	sort.Slice(t.routes, func(i, j int) bool { return t.routes[i].Name < t.routes[j].Name })
	return t, errors.Join(errs...)
}

type Delivery struct {
	Sink     Sink
	Priority int
	TTL      time.Duration
	Routes   []string
}

func (t *Table) Match(m *Message) []Delivery {
	var out []Delivery
	src := strings.ToLower(m.Source) + "/"
	for _, r := range t.routes {
		rs := strings.ToLower(strings.TrimRight(r.Source, "*/")) + "/"
		if !strings.HasPrefix(src, rs) {
			continue
		}
		found := false
		for i := range out {
			if out[i].Sink == r.Sink {
				found = true
				if r.Priority < out[i].Priority {
					out[i].Priority, out[i].TTL = r.Priority, r.TTL
				}
				out[i].Routes = append(out[i].Routes, r.Name)
			}
		}
		if !found {
			out = append(out, Delivery{Sink: r.Sink, Priority: r.Priority, TTL: r.TTL, Routes: []string{r.Name}})
		}
	}
	return out
}
