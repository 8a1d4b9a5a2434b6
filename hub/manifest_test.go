package hub

import (
	"fmt"
	"strings"
	"testing"

	"ledge/internal/fault"
)

func TestRoutesFromJSON(t *testing.T) {
	got, err := RoutesFromJSON([]byte(`{"a": "FROM /messages/* INTO $upstream",
		"b": {"route": "FROM /messages/modules/cam/* INTO BrokeredEndpoint(\"/modules/m/inputs/i\")", "priority": 1, "timeToLiveSecs": 60}}`))
	if err != nil {
		t.Fatal(err)
	}
	if got["a"].Route != "FROM /messages/* INTO $upstream" || *got["b"].Priority != 1 || *got["b"].TimeToLiveSecs != 60 {
		t.Errorf("%+v", got)
	}
	for _, tc := range []struct{ in, want string }{
		{`[1]`, "want an object"},
		{`{"x": {"route": "a", "prio": 1}}`, "routes.x"},
		{`{"x": {"route": "a", "priority": 12}}`, "routes.x.priority"},
	} {
		if _, err := RoutesFromJSON([]byte(tc.in)); !fault.Is(err, fault.Invalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", tc.in, err)
		}
	}
	if r, err := RoutesFromJSON(nil); err != nil || len(r) != 0 {
		t.Errorf("null routes: %v %v", r, err)
	}
}

// TestSetRoutesValidatesFirst: a table with a bad route is refused with
// the route's name and changes nothing; a plan says what would change.
func TestSetRoutesValidatesFirst(t *testing.T) {
	h := startHub(t, func(c *Config) {
		c.Routes = map[string]RouteConfig{"keep": {Route: `FROM /messages/* INTO $upstream`}}
	}, true)
	bad := map[string]RouteSpec{"keep": {Route: `FROM /messages/* INTO $upstream`}, "broken": {Route: `FROM /messages/* WHERE (a = INTO $upstream`}}
	err := h.SetRoutes(bad)
	if !fault.Is(err, fault.Invalid) || !strings.Contains(err.Error(), "broken") {
		t.Fatalf("bad table: %v", err)
	}
	if n := len(h.routes.Load().Routes()); n != 1 {
		t.Errorf("a refused table changed the routes: %d in force", n)
	}
	plan, err := h.PlanRoutes(map[string]RouteSpec{"new": {Route: `FROM /messages/modules/x/* INTO $upstream`}})
	if err != nil || fmt.Sprint(plan) != "[{keep remove FROM /messages/* INTO $upstream} {new create FROM /messages/modules/x/* INTO $upstream}]" {
		t.Errorf("plan %v %v", plan, err)
	}
	if err := h.SetRoutes(map[string]RouteSpec{"new": {Route: `FROM /messages/modules/x/* INTO $upstream`}}); err != nil {
		t.Fatal(err)
	}
	if rs := h.routes.Load().Routes(); len(rs) != 1 || rs[0].Name != "new" {
		t.Errorf("routes after set: %v", rs)
	}
}
