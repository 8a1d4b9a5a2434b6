package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// TestOpenAPIMatchesRoutes: every /api/v1 route the server registers is in
// openapi.json with its method, and every documented operation exists.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	s := newTestServer(t, nil)
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			documented[strings.ToUpper(method)+" /api/v1"+path] = true
		}
	}
	param := regexp.MustCompile(`[:*]([A-Za-z]+)`)
	registered := map[string]bool{}
	for _, r := range s.engine.Routes() {
		if !strings.HasPrefix(r.Path, "/api/v1/") {
			continue
		}
		registered[r.Method+" "+param.ReplaceAllString(r.Path, "{$1}")] = true
	}
	var missing, stale []string
	for k := range registered {
		if !documented[k] {
			missing = append(missing, k)
		}
	}
	for k := range documented {
		if !registered[k] {
			stale = append(stale, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(stale)
	if len(missing) > 0 {
		t.Errorf("routes not in openapi.json:\n  %s", strings.Join(missing, "\n  "))
	}
	if len(stale) > 0 {
		t.Errorf("openapi.json documents routes that do not exist:\n  %s", strings.Join(stale, "\n  "))
	}
	if len(registered) < 4 {
		t.Fatalf("only %d API routes found", len(registered))
	}
}

func TestOpenAPIServedWithoutAuth(t *testing.T) {
	s := newTestServer(t, nil)
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/openapi.json", nil))
	if rec.Code != http.StatusOK || !json.Valid(rec.Body.Bytes()) {
		t.Fatalf("%d", rec.Code)
	}
}

// TestEveryAPIRouteNeedsAuth sends every registered /api/v1 route a
// request without credentials over TCP: all but login and the OpenAPI
// document answer 401.
func TestEveryAPIRouteNeedsAuth(t *testing.T) {
	s := startAuthServer(t, "correct horse battery")
	param := regexp.MustCompile(`[:*][A-Za-z]+`)
	open := map[string]bool{"POST /api/v1/auth/login": true, "GET /api/v1/openapi.json": true}
	n := 0
	for _, r := range s.engine.Routes() {
		if !strings.HasPrefix(r.Path, "/api/v1/") || open[r.Method+" "+r.Path] {
			continue
		}
		path := param.ReplaceAllString(r.Path, "x")
		req, _ := http.NewRequest(r.Method, s.url+path, strings.NewReader("{}"))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s %s without credentials: %d, want 401", r.Method, path, resp.StatusCode)
		}
		n++
	}
	if n < 3 {
		t.Fatalf("only %d routes checked", n)
	}
}

// TestOpenAPIResponseSchemas: the API's response types are its JSON
// contract. Each has its schema in openapi.json with exactly its fields
// (names, types, which are always there), every schema there is one of
// them or a request body, and each is what some route answers.
func TestOpenAPIResponseSchemas(t *testing.T) {
	var doc struct {
		Paths      map[string]map[string]json.RawMessage `json:"paths"`
		Components struct {
			Schemas map[string]any `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatal(err)
	}
	requestSchemas := map[string]bool{"Error": true, "ModelSpec": true}
	for name, s := range doc.Components.Schemas {
		rt, ok := responseTypes[name]
		if !ok {
			if !requestSchemas[name] {
				t.Errorf("schema %s is no response type of package web", name)
			}
			continue
		}
		if diff := schemaDiff("", contract(s), contract(objectSchema(rt))); diff != "" {
			t.Errorf("schema %s does not match type %s: %s", name, rt, diff)
		}
	}
	for name := range responseTypes {
		if doc.Components.Schemas[name] == nil {
			t.Errorf("type %s has no schema in openapi.json", name)
		}
	}
	// What the routes answer, and what that holds.
	reached := map[string]bool{}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				name := strings.TrimPrefix(ref, "#/components/schemas/")
				if !reached[name] {
					reached[name] = true
					walk(doc.Components.Schemas[name])
				}
			}
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	for _, ops := range doc.Paths {
		for _, op := range ops {
			var o struct {
				Responses map[string]any `json:"responses"`
			}
			json.Unmarshal(op, &o)
			walk(o.Responses)
		}
	}
	for name := range responseTypes {
		if !reached[name] {
			t.Errorf("no route answers schema %s", name)
		}
	}
}

// contract is a schema as JSON values, without what only documents it
// (descriptions, enums).
func contract(s any) any {
	b, _ := json.Marshal(s)
	var v any
	json.Unmarshal(b, &v)
	var strip func(v any) any
	strip = func(v any) any {
		switch v := v.(type) {
		case map[string]any:
			delete(v, "description")
			delete(v, "enum")
			for k, x := range v {
				v[k] = strip(x)
			}
		case []any:
			for i, x := range v {
				v[i] = strip(x)
			}
		}
		return v
	}
	return strip(v)
}

// schemaDiff says where got differs from want ("" when it does not);
// lists of required fields compare as sets.
func schemaDiff(at string, got, want any) string {
	gm, gok := got.(map[string]any)
	wm, wok := want.(map[string]any)
	if gok && wok {
		var diffs []string
		for k := range wm {
			if _, ok := gm[k]; !ok {
				diffs = append(diffs, fmt.Sprintf("%s/%s: missing", at, k))
			}
		}
		for k, g := range gm {
			w, ok := wm[k]
			switch {
			case !ok:
				diffs = append(diffs, fmt.Sprintf("%s/%s: not in the type", at, k))
			case k == "required":
				gs, ws := fmt.Sprint(sortedAny(g)), fmt.Sprint(sortedAny(w))
				if gs != ws {
					diffs = append(diffs, fmt.Sprintf("%s/required: %s, want %s", at, gs, ws))
				}
			default:
				if d := schemaDiff(at+"/"+k, g, w); d != "" {
					diffs = append(diffs, d)
				}
			}
		}
		sort.Strings(diffs)
		return strings.Join(diffs, "; ")
	}
	if !reflect.DeepEqual(got, want) {
		return fmt.Sprintf("%s: %v, want %v", at, got, want)
	}
	return ""
}

func sortedAny(v any) []string {
	l, _ := v.([]any)
	out := make([]string, len(l))
	for i, x := range l {
		out[i] = fmt.Sprint(x)
	}
	sort.Strings(out)
	return out
}
