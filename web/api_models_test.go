package web

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"ledge/internal/fault"
)

// fakeModels stands in for the model store (tested in its own package and
// in appliance): it records calls and refuses what the store would.
type fakeModels struct {
	pulled    []string
	activate  []bool
	activated []string
}

func (f *fakeModels) List(context.Context) ([]Model, error) {
	return []Model{{Name: "people", Active: "1"}}, nil
}

func (f *fakeModels) Get(_ context.Context, name string) (Model, error) {
	if name != "people" {
		return Model{}, fault.New(fault.NotFound, "no model named %q in the store", name)
	}
	return Model{Name: "people", Active: "1"}, nil
}

func (f *fakeModels) Pull(_ context.Context, spec []byte, activate bool) (ModelVersion, error) {
	var m map[string]any
	if json.Unmarshal(spec, &m) != nil || m["sha256"] == nil {
		return ModelVersion{}, fault.New(fault.Invalid, "sha256: is required")
	}
	f.pulled = append(f.pulled, string(spec))
	f.activate = append(f.activate, activate)
	name, _ := m["name"].(string)
	return ModelVersion{Name: name, State: "queued"}, nil
}

func (f *fakeModels) Activate(_ context.Context, name, version string) (ModelVersion, error) {
	if version == "broken" {
		return ModelVersion{}, fault.New(fault.Invalid, "people@broken cannot serve, 1 stays active: warm-up failed")
	}
	f.activated = append(f.activated, name+"@"+version)
	return ModelVersion{Name: name, Version: version, State: "active"}, nil
}

func (f *fakeModels) Rollback(_ context.Context, name string) (ModelVersion, error) {
	if name != "people" {
		return ModelVersion{}, fault.New(fault.Conflict, "no earlier version of %q is in the store", name)
	}
	return ModelVersion{Name: name, Version: "0"}, nil
}

func modelServer(t *testing.T, fm *fakeModels) *Server {
	t.Helper()
	s, err := New(Options{Listen: "127.0.0.1:0", Socket: filepath.Join(t.TempDir(), "s.sock"), Models: fm, Dev: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestModelRoutes(t *testing.T) {
	fm := &fakeModels{}
	s := modelServer(t, fm)
	do := func(method, path, body string) (int, map[string]any) {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.RemoteAddr = "127.0.0.1:5000"
		req.Host = "127.0.0.1" // dev mode: a loopback client on a loopback name
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		var out map[string]any
		json.Unmarshal(rec.Body.Bytes(), &out)
		return rec.Code, out
	}
	errCode := func(out map[string]any) string {
		e, _ := out["error"].(map[string]any)
		c, _ := e["code"].(string)
		return c
	}
	spec := `{"name":"people","version":"2","url":"https://m.example.com/p.onnx","sha256":"` + strings.Repeat("a", 64) + `"}`
	for _, tc := range []struct {
		method, path, body string
		code               int
		errCode            string
	}{
		{"GET", "/api/v1/models", "", 200, ""},
		{"GET", "/api/v1/models/people", "", 200, ""},
		{"GET", "/api/v1/models/nobody", "", 404, "not_found"},
		{"POST", "/api/v1/models", spec, 202, ""},
		{"POST", "/api/v1/models?activate=true", spec, 202, ""},
		{"POST", "/api/v1/models?activate=maybe", spec, 400, "invalid"},
		{"POST", "/api/v1/models", `{"name":"people"}`, 400, "invalid"},
		{"POST", "/api/v1/models/people/activate", `{"version":"2"}`, 200, ""},
		{"POST", "/api/v1/models/people/activate", `{"version":"broken"}`, 400, "invalid"},
		{"POST", "/api/v1/models/people/activate", `{}`, 400, "invalid"},
		{"POST", "/api/v1/models/people/activate", `{"version":"2","force":true}`, 400, "invalid"},
		{"POST", "/api/v1/models/people/activate", `{"version":`, 400, "invalid"},
		{"POST", "/api/v1/models/people/rollback", "", 200, ""},
		{"POST", "/api/v1/models/nobody/rollback", "", 409, "conflict"},
	} {
		code, out := do(tc.method, tc.path, tc.body)
		if code != tc.code || errCode(out) != tc.errCode {
			t.Errorf("%s %s %s: %d %v, want %d %q", tc.method, tc.path, tc.body, code, out, tc.code, tc.errCode)
		}
	}
	for _, path := range []string{"/api/v1/models", "/api/v1/models/people/rollback"} {
		req := httptest.NewRequest("POST", path, strings.NewReader(spec))
		req.RemoteAddr = "192.0.2.7:5000" // not loopback: dev mode does not let it in
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		if rec.Code != 401 {
			t.Errorf("POST %s from the LAN without credentials: %d", path, rec.Code)
		}
	}
	if len(fm.pulled) != 2 || fm.activate[0] || !fm.activate[1] {
		t.Errorf("pulls %v activate %v", fm.pulled, fm.activate)
	}
	if strings.Join(fm.activated, ",") != "people@2" {
		t.Errorf("activated %v (a refused request changed something?)", fm.activated)
	}
}

func TestModelRoutesWithoutStore(t *testing.T) {
	s, err := New(Options{Listen: "127.0.0.1:0", Dev: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	req := httptest.NewRequest("GET", "/api/v1/models", nil)
	req.RemoteAddr = "127.0.0.1:5000"
	req.Host = "127.0.0.1" // dev mode: a loopback client on a loopback name
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), "unavailable") {
		t.Errorf("%d %s", rec.Code, rec.Body)
	}
}
