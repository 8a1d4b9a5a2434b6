package web

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
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
