package route

import (
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"ledge/internal/fault"
)

func prio(p int) *int       { return &p }
func ttl(s int64) *int64    { return &s }
func str(s string) Spec     { return Spec{Route: s} }
func blink() Sink           { return Sink{Module: "blink", Input: "in"} }
func upstream() Sink        { return Sink{Upstream: true} }
func modSink(m string) Sink { return Sink{Module: m, Input: "in"} }

func TestTablePriorityOrdering(t *testing.T) {
	tab, err := NewTable(map[string]Spec{
		// Legacy string form: default priority, global TTL.
		"all": str("FROM /messages/* INTO $upstream"),
		// Object form, highest priority, own TTL.
		"people":  {Route: "FROM /messages/modules/cam/outputs/* WHERE $body.label = 'person' INTO $upstream", Priority: prio(0), TimeToLiveSecs: ttl(86400)},
		"camData": {Route: "FROM /messages/modules/cam/outputs/* INTO $upstream", Priority: prio(1), TimeToLiveSecs: ttl(1800)},
		"blink":   {Route: `FROM /messages/modules/cam/outputs/alerts WHERE $body.score > 0.5 INTO BrokeredEndpoint("/modules/blink/inputs/in")`, Priority: prio(5)},
		"log":     str(`FROM /messages/modules/* INTO BrokeredEndpoint("/modules/log/inputs/in")`),
		"archive": {Route: `FROM /messages/modules/cam/* INTO BrokeredEndpoint("/modules/archive/inputs/in")`, Priority: prio(5)},
		"twin":    {Route: "FROM /twinChangeNotifications INTO $upstream", Priority: prio(9)},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		msg  *Message
		want []Delivery
	}{
		{"person alert", jsonMsg(`{"label":"person","score":0.9}`), []Delivery{
			{Sink: upstream(), Priority: 0, TTL: 24 * time.Hour, Routes: []string{"all", "camData", "people"}},
			{Sink: modSink("archive"), Priority: 5, Routes: []string{"archive"}},
			{Sink: blink(), Priority: 5, Routes: []string{"blink"}},
			{Sink: modSink("log"), Priority: DefaultPriority, Routes: []string{"log"}},
		}},
		{"car alert", jsonMsg(`{"label":"car","score":0.4}`), []Delivery{
			{Sink: upstream(), Priority: 1, TTL: 30 * time.Minute, Routes: []string{"all", "camData"}},
			{Sink: modSink("archive"), Priority: 5, Routes: []string{"archive"}},
			{Sink: modSink("log"), Priority: DefaultPriority, Routes: []string{"log"}},
		}},
		{"person without a JSON content type", withSys(jsonMsg(`{"label":"person","score":0.9}`)), []Delivery{
			{Sink: upstream(), Priority: 1, TTL: 30 * time.Minute, Routes: []string{"all", "camData"}},
			{Sink: modSink("archive"), Priority: 5, Routes: []string{"archive"}},
			{Sink: modSink("log"), Priority: DefaultPriority, Routes: []string{"log"}},
		}},
		{"leaf device", &Message{Source: "/messages"}, []Delivery{
			{Sink: upstream(), Priority: DefaultPriority, Routes: []string{"all"}},
		}},
		{"twin change", &Message{Source: "/twinChangeNotifications"}, []Delivery{
			{Sink: upstream(), Priority: 9, Routes: []string{"twin"}},
		}},
		{"unknown source", &Message{Source: "/elsewhere"}, nil},
	}
	for _, tt := range tests {
		got := tab.Match(tt.msg)
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tt.name, got, tt.want)
		}
	}
}

func TestTableTTL(t *testing.T) {
	tests := []struct {
		name  string
		specs map[string]Spec
		prio  int
		ttl   time.Duration
	}{
		{"longest TTL at the same priority", map[string]Spec{
			"a": {Route: "FROM /messages INTO $upstream", Priority: prio(2), TimeToLiveSecs: ttl(30)},
			"b": {Route: "FROM /messages INTO $upstream", Priority: prio(2), TimeToLiveSecs: ttl(60)},
			"c": {Route: "FROM /messages INTO $upstream", Priority: prio(2)},
		}, 2, time.Minute},
		{"the TTL of the winning priority", map[string]Spec{
			"a": {Route: "FROM /messages INTO $upstream", Priority: prio(1), TimeToLiveSecs: ttl(10)},
			"b": {Route: "FROM /messages INTO $upstream", Priority: prio(2), TimeToLiveSecs: ttl(600)},
		}, 1, 10 * time.Second},
		{"explicit zero is the global TTL", map[string]Spec{
			"a": {Route: "FROM /messages INTO $upstream", Priority: prio(3), TimeToLiveSecs: ttl(0)},
		}, 3, 0},
		{"the largest TTL", map[string]Spec{
			"a": {Route: "FROM /messages INTO $upstream", TimeToLiveSecs: ttl(MaxTTLSecs)},
		}, DefaultPriority, MaxTTLSecs * time.Second},
	}
	for _, tt := range tests {
		tab, err := NewTable(tt.specs)
		if err != nil {
			t.Fatal(err)
		}
		d := tab.Match(&Message{Source: "/messages"})
		if len(d) != 1 || d[0].Priority != tt.prio || d[0].TTL != tt.ttl {
			t.Errorf("%s: got %+v, want priority %d TTL %v", tt.name, d, tt.prio, tt.ttl)
		}
	}
}

func TestNewTableErrors(t *testing.T) {
	tests := []struct {
		name  string
		specs map[string]Spec
		msgs  []string // in this order in the error text
		parse string   // name of the *ParseError errors.As finds, if any
	}{
		{"bad names", map[string]Spec{
			"a.b": str("FROM /messages INTO $upstream"), "$x": str("FROM /messages INTO $upstream"),
			"a#": str("FROM /messages INTO $upstream"), "a b": str("FROM /messages INTO $upstream"),
			"": str("FROM /messages INTO $upstream"), "ok-name_1": str("FROM /messages INTO $upstream"),
		}, []string{`route "": a route name`, `route "$x": a route name`, `route "a b"`, `route "a#"`, `route "a.b"`}, ""},
		{"priority", map[string]Spec{
			"hi": {Route: "FROM /messages INTO $upstream", Priority: prio(10)},
			"lo": {Route: "FROM /messages INTO $upstream", Priority: prio(-1)},
		}, []string{`route "hi": priority 10 is out of range 0..9`, `route "lo": priority -1 is out of range 0..9`}, ""},
		{"ttl", map[string]Spec{
			"neg": {Route: "FROM /messages INTO $upstream", TimeToLiveSecs: ttl(-1)},
			"big": {Route: "FROM /messages INTO $upstream", TimeToLiveSecs: ttl(MaxTTLSecs + 1)},
		}, []string{`route "big": timeToLiveSecs 4294967296 is out of range 0..4294967295`, `route "neg": timeToLiveSecs -1 is out of range`}, ""},
		{"parse errors name the route", map[string]Spec{
			"alerts": str("FROM /messages WHERE temp > 30 INTO $upstream"),
			"good":   str("FROM /messages INTO $upstream"),
			"zzz":    str("FROM /messages INTO $nowhere"),
		}, []string{`route "alerts": at offset 26: operator '>'`, `route "zzz": at offset 20: unknown sink`}, "alerts"},
	}
	for _, tt := range tests {
		tab, err := NewTable(tt.specs)
		if err == nil || tab != nil {
			t.Errorf("%s: NewTable = %v, %v; want an error", tt.name, tab, err)
			continue
		}
		if !fault.Is(err, fault.Invalid) {
			t.Errorf("%s: error kind %q, want invalid", tt.name, fault.KindOf(err))
		}
		text := err.Error()
		last := -1
		for _, m := range tt.msgs {
			i := strings.Index(text, m)
			if i < 0 || i < last {
				t.Errorf("%s: error %q\nlacks %q (or out of order)", tt.name, text, m)
			}
			last = i
		}
		if n := strings.Count(text, "\n") + 1; n != len(tt.msgs) {
			t.Errorf("%s: %d errors in %q, want %d", tt.name, n, text, len(tt.msgs))
		}
		var pe *ParseError
		if errors.As(err, &pe) != (tt.parse != "") || (pe != nil && pe.Name != tt.parse) {
			t.Errorf("%s: errors.As ParseError = %v, want route %q", tt.name, pe, tt.parse)
		}
	}
}

func TestTableAccessors(t *testing.T) {
	tab, err := NewTable(map[string]Spec{
		"c": str(`FROM /messages INTO BrokeredEndpoint("/modules/z/inputs/in")`),
		"a": str("FROM /messages INTO $upstream"),
		"b": str(`FROM /messages INTO BrokeredEndpoint("/modules/a/inputs/in")`),
		"d": str(`FROM /messages INTO BrokeredEndpoint("/modules/a/inputs/in")`),
	})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range tab.Routes() {
		names = append(names, r.Name)
	}
	if !reflect.DeepEqual(names, []string{"a", "b", "c", "d"}) {
		t.Errorf("Routes() names %v", names)
	}
	if got, want := tab.Sinks(), []Sink{upstream(), modSink("a"), modSink("z")}; !reflect.DeepEqual(got, want) {
		t.Errorf("Sinks() = %v, want %v", got, want)
	}
	// Same priority: ordered by sink.
	d := tab.Match(&Message{Source: "/messages"})
	var sinks []string
	for _, x := range d {
		sinks = append(sinks, x.Sink.String())
	}
	if want := []string{"$upstream", "/modules/a/inputs/in", "/modules/z/inputs/in"}; !reflect.DeepEqual(sinks, want) {
		t.Errorf("Match order %v, want %v", sinks, want)
	}
	if !reflect.DeepEqual(d[1].Routes, []string{"b", "d"}) {
		t.Errorf("routes of the shared sink: %v", d[1].Routes)
	}

	var nilTab *Table
	if nilTab.Match(&Message{Source: "/messages"}) != nil || nilTab.Routes() != nil || nilTab.Sinks() != nil {
		t.Error("a nil table is not empty")
	}
	empty, err := NewTable(nil)
	if err != nil || empty.Match(&Message{Source: "/messages"}) != nil || len(empty.Routes()) != 0 {
		t.Errorf("empty table: %v", err)
	}
	if tab.Match(nil) != nil {
		t.Error("Match(nil) matched")
	}
}

// More routes than Match's stack buffers hold.
func TestTableManyRoutes(t *testing.T) {
	specs := map[string]Spec{}
	for i := range 50 {
		name := string(rune('A'+i%26)) + string(rune('a'+i/26))
		specs[name] = Spec{Route: `FROM /messages INTO BrokeredEndpoint("/modules/` + name + `/inputs/in")`, Priority: prio(i % 10)}
	}
	tab, err := NewTable(specs)
	if err != nil {
		t.Fatal(err)
	}
	d := tab.Match(&Message{Source: "/messages"})
	if len(d) != 50 {
		t.Fatalf("%d deliveries, want 50", len(d))
	}
	for i := 1; i < len(d); i++ {
		a, b := d[i-1], d[i]
		if a.Priority > b.Priority || (a.Priority == b.Priority && a.Sink.String() >= b.Sink.String()) {
			t.Fatalf("deliveries out of order at %d: %v then %v", i, a, b)
		}
	}
}

// Run with -race: a table is used by many goroutines at once.
func TestTableConcurrentMatch(t *testing.T) {
	tab, err := NewTable(map[string]Spec{
		"people": {Route: "FROM /messages/modules/cam/outputs/* WHERE $body.label = 'person' INTO $upstream", Priority: prio(0)},
		"all":    str("FROM /messages/* INTO $upstream"),
	})
	if err != nil {
		t.Fatal(err)
	}
	msg := jsonMsg(`{"label":"person"}`)
	want := tab.Match(msg)
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				if got := tab.Match(msg); !reflect.DeepEqual(got, want) {
					errs <- "concurrent Match differs"
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
}
