package hub

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"

	"ledge/internal/fault"
)

// RoutesFromJSON reads a manifest's routes section: an object of route
// name to either the route text or {"route", "priority",
// "timeToLiveSecs"}, as $edgeHub's properties.desired.routes has it.
// null means no routes. Errors name the route.
func RoutesFromJSON(raw json.RawMessage) (map[string]RouteSpec, error) {
	out := map[string]RouteSpec{}
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return out, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fault.New(fault.Invalid, "routes: want an object of route name to route: %v", err)
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		v := m[n]
		var text string
		if json.Unmarshal(v, &text) == nil {
			out[n] = RouteSpec{Route: text}
			continue
		}
		var spec RouteSpec
		dec := json.NewDecoder(bytes.NewReader(v))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&spec); err != nil {
			return nil, fault.New(fault.Invalid, "routes.%s: want a route string or {route, priority, timeToLiveSecs}: %v", n, err)
		}
		if spec.Priority != nil && (*spec.Priority < 0 || *spec.Priority > 9) {
			return nil, fault.New(fault.Invalid, "routes.%s.priority: %d, want 0 to 9", n, *spec.Priority)
		}
		out[n] = spec
	}
	return out, nil
}

// StoreSettingsFromJSON reads a manifest's storeAndForward section
// ({"timeToLiveSecs": n}, as $edgeHub's storeAndForwardConfiguration).
func StoreSettingsFromJSON(raw json.RawMessage) (StoreSettings, error) {
	var s StoreSettings
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return s, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return s, fault.New(fault.Invalid, "storeAndForward: %v", err)
	}
	if s.MaxSizeBytes != nil && *s.MaxSizeBytes < 0 {
		return s, fault.New(fault.Invalid, "storeAndForward.maxSizeBytes: %d: want 0 or more", *s.MaxSizeBytes)
	}
	return s, nil
}

// RouteChange is one line of a routes plan.
type RouteChange struct {
	Name   string `json:"name"`
	Action string `json:"action"` // create, update, remove, unchanged
	// Text is the route (FROM ... WHERE ... INTO ...): the new one, or for
	// remove the one in force.
	Text string `json:"text"`
}

// PlanRoutes compares a route table with the one in force.
func (h *Hub) PlanRoutes(routes map[string]RouteSpec) ([]RouteChange, error) {
	if err := h.ValidateRoutes(routes); err != nil {
		return nil, err
	}
	type route struct{ key, text string }
	cur := map[string]route{}
	for _, r := range h.routes.Load().Routes() {
		cur[r.Name] = route{fmt.Sprintf("%s|%d|%s", r.Text, r.Priority, r.TTL), r.Text}
	}
	next, _ := buildTable(routes)
	var out []RouteChange
	seen := map[string]bool{}
	for _, r := range next.Routes() {
		seen[r.Name] = true
		key := fmt.Sprintf("%s|%d|%s", r.Text, r.Priority, r.TTL)
		switch old, ok := cur[r.Name]; {
		case !ok:
			out = append(out, RouteChange{r.Name, "create", r.Text})
		case old.key != key:
			out = append(out, RouteChange{r.Name, "update", r.Text})
		default:
			out = append(out, RouteChange{r.Name, "unchanged", r.Text})
		}
	}
	for n, r := range cur {
		if !seen[n] {
			out = append(out, RouteChange{n, "remove", r.text})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
