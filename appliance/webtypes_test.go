package appliance

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"ledge/agent"
	"ledge/hub"
	"ledge/models"
	"ledge/pipeline"
	"ledge/web"
)

// fill sets every exported field of v (a pointer) to a value that is not
// zero, recursively: one element per slice and map, a value behind every
// pointer, a JSON object where raw JSON goes.
func fill(v reflect.Value, n *int) {
	*n++
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), n)
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			v.Set(reflect.ValueOf(time.Date(2026, 11, 30, 8, 0, *n, 0, time.UTC)))
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), n)
			}
		}
	case reflect.Slice:
		if v.Type() == reflect.TypeFor[json.RawMessage]() {
			v.SetBytes([]byte(fmt.Sprintf(`{"k":%d}`, *n)))
			return
		}
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(v.Index(0), n)
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k, n)
		fill(e, n)
		v.SetMapIndex(k, e)
	case reflect.Interface:
		v.Set(reflect.ValueOf(map[string]any{"k": fmt.Sprint(*n)}))
	case reflect.String:
		v.SetString(fmt.Sprint("s", *n))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(*n))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(*n))
	case reflect.Float32, reflect.Float64:
		v.SetFloat(float64(*n) + 0.5)
	default:
		panic("fill: " + v.Type().String())
	}
}

// filled is a T with every field set.
func filled[T any]() T {
	var v T
	n := 0
	fill(reflect.ValueOf(&v).Elem(), &n)
	return v
}

// sameJSON checks that a and b encode to the same JSON value.
func sameJSON(t *testing.T, what string, a, b any) {
	t.Helper()
	var ja, jb any
	for _, p := range []struct {
		v   any
		out *any
	}{{a, &ja}, {b, &jb}} {
		raw, err := json.Marshal(p.v)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if err := json.Unmarshal(raw, p.out); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	if !reflect.DeepEqual(ja, jb) {
		ga, _ := json.MarshalIndent(ja, "", " ")
		gb, _ := json.MarshalIndent(jb, "", " ")
		t.Errorf("%s: the component's JSON\n%s\nweb's\n%s", what, ga, gb)
	}
}

// TestWebTypesKeepTheJSON: every component value the API shows, with
// every field set, encodes the same as web's response type made from it,
// so the API answers what it answered before web had its own types, and a
// field added on either side without the other fails here.
func TestWebTypesKeepTheJSON(t *testing.T) {
	m := filled[models.Model]()
	sameJSON(t, "models.Model", m, webModel(m))
	v := filled[models.Version]()
	sameJSON(t, "models.Version", v, webModelVersion(v))

	st := filled[pipeline.Stats]()
	sameJSON(t, "pipeline.Stats", st, webPipelineStats(st))
	ev := filled[pipeline.Event]()
	sameJSON(t, "pipeline.Event", ev, webEvent(ev))
	spec := filled[pipeline.Spec]()
	type pipelineView struct { // what the API showed before web.Pipeline
		pipeline.Stats
		Owner string         `json:"owner"`
		Spec  *pipeline.Spec `json:"spec,omitempty"`
	}
	red := spec.Redacted()
	sameJSON(t, "pipeline view", pipelineView{st, "api", &red},
		web.Pipeline{PipelineStats: webPipelineStats(st), Owner: "api", Spec: rawJSON(red)})
	page := struct {
		Events []pipeline.Event `json:"events"`
		Next   int64            `json:"next"`
	}{[]pipeline.Event{ev, ev}, ev.ID}
	sameJSON(t, "event page", page, eventPage(page.Events, 2))

	p := filled[agent.Plan]()
	sameJSON(t, "agent.Plan", p, webPlan(p))
	d := filled[agent.Deployment]()
	sameJSON(t, "agent.Deployment", d, webDeployment(d))
	r := filled[agent.Reported]()
	sameJSON(t, "agent.Reported", r, webReport(r))

	hs := filled[hub.Stats]()
	sameJSON(t, "hub.Stats", hs, webHubStats(hs))
	id := filled[hub.Identity]()
	sameJSON(t, "hub.Identity", id, webIdentity(id))
	c := filled[hub.Created]()
	sameJSON(t, "hub.Created", c, webCreated(c))
	tw := filled[hub.Twin]()
	sameJSON(t, "hub.Twin", tw, webTwin(tw))
}
