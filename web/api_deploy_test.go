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

// fakeDeployer stands in for the agent (tested in its own package):
// manifests containing "BAD" do not validate, "UNSIGNED" lack a signature.
type fakeDeployer struct {
	applied    []string
	signatures []string
	rollbacks  int
}

func (f *fakeDeployer) check(m []byte) error {
	switch {
	case strings.Contains(string(m), "BAD"):
		return fault.New(fault.Invalid, "manifest: line 3: modules.cam.restartPolicy: \"BAD\" is not a restart policy")
	case strings.Contains(string(m), "UNSIGNED"):
		return fault.New(fault.Unauthorized, "manifest is not signed")
	}
	return nil
}

func (f *fakeDeployer) Check(_ context.Context, m, sig []byte) (DeploymentPlan, error) {
	if err := f.check(m); err != nil {
		return DeploymentPlan{}, err
	}
	return DeploymentPlan{Changes: []PlanChange{{Kind: "module", Name: "cam", Action: "create"}}}, nil
}

func (f *fakeDeployer) Apply(_ context.Context, m, sig []byte) (AppliedDeployment, error) {
	if err := f.check(m); err != nil {
		return AppliedDeployment{}, err
	}
	f.applied = append(f.applied, string(m))
	f.signatures = append(f.signatures, string(sig))
	return AppliedDeployment{Deployment: Deployment{ID: int64(len(f.applied))}}, nil
}

func (f *fakeDeployer) Status(context.Context) (AgentReport, error) {
	return AgentReport{LastDesiredStatus: DesiredStatus{Code: 200}}, nil
}

func (f *fakeDeployer) History(_ context.Context, limit int) ([]Deployment, error) {
	return []Deployment{{ID: 1}, {ID: int64(limit)}}, nil
}

func (f *fakeDeployer) Rollback(context.Context) (Deployment, error) {
	f.rollbacks++
	if f.rollbacks > 1 {
		return Deployment{}, fault.New(fault.Conflict, "no earlier deployment that converged")
	}
	return Deployment{ID: 1}, nil
}

func (f *fakeDeployer) Manifest(_ context.Context, id int64) (Deployment, []byte, error) {
	if id > int64(len(f.applied)) {
		return Deployment{}, nil, fault.New(fault.NotFound, "no deployment %d", id)
	}
	return Deployment{ID: id}, []byte("version: x\n"), nil
}

func (f *fakeDeployer) Modules(context.Context) (map[string]ModuleReport, error) {
	return map[string]ModuleReport{}, nil
}

func (f *fakeDeployer) RestartModule(_ context.Context, name string) error {
	return fault.New(fault.NotFound, "module %q is not in the deployment", name)
}

func (f *fakeDeployer) ModuleLogs(_ context.Context, name string, tail int) ([]byte, error) {
	return nil, fault.New(fault.NotFound, "module %q has no container", name)
}

func TestDeployRoutes(t *testing.T) {
	fd := &fakeDeployer{}
	s, err := New(Options{Listen: "127.0.0.1:0", Socket: filepath.Join(t.TempDir(), "s.sock"), Deployments: fd, Modules: fd, Dev: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
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
	errMsg := func(out map[string]any) string {
		e, _ := out["error"].(map[string]any)
		m, _ := e["message"].(string)
		return m
	}
	for _, tc := range []struct {
		method, path, body string
		code               int
		want               string
	}{
		{"POST", "/api/v1/deployments/check", `{"manifest": "version: '1'"}`, 200, ""},
		{"POST", "/api/v1/deployments/check", `{"manifest": "BAD"}`, 400, "is not a restart policy"},
		{"POST", "/api/v1/deployments/check", `{"manifest": ""}`, 400, `"manifest" is empty`},
		{"POST", "/api/v1/deployments/check", `{"manifest": 5}`, 400, "malformed JSON body"},
		{"POST", "/api/v1/deployments/check", `{"manfest": "x"}`, 400, `unknown field "manfest"`},
		{"POST", "/api/v1/deployments", `{"manifest": "BAD"}`, 400, "is not a restart policy"},
		{"POST", "/api/v1/deployments", `{"manifest": "UNSIGNED"}`, 401, "not signed"},
		{"POST", "/api/v1/deployments", `{"manifest": "version: '1'", "signature": "{\"alg\": \"ed25519\"}"}`, 202, ""},
		{"GET", "/api/v1/deployments/current", "", 200, ""},
		{"GET", "/api/v1/deployments?limit=5", "", 200, ""},
		{"GET", "/api/v1/deployments?limit=0", "", 400, "limit"},
		{"POST", "/api/v1/deployments/rollback", "", 202, ""},
		{"POST", "/api/v1/deployments/rollback", "", 409, "no earlier deployment"},
	} {
		code, out := do(tc.method, tc.path, tc.body)
		if code != tc.code || (tc.want != "" && !strings.Contains(errMsg(out), tc.want)) {
			t.Errorf("%s %s %s: %d %v, want %d %q", tc.method, tc.path, tc.body, code, out, tc.code, tc.want)
		}
	}
	if len(fd.applied) != 1 || fd.signatures[0] != `{"alg": "ed25519"}` {
		t.Errorf("applied %v with signatures %v: only the good one should reach the agent", fd.applied, fd.signatures)
	}
	// Without an agent the routes say so.
	s2, _ := New(Options{Listen: "127.0.0.1:0", Dev: true})
	defer s2.Close()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/api/v1/deployments/current", nil)
	req.RemoteAddr = "127.0.0.1:5000"
	req.Host = "127.0.0.1" // dev mode: a loopback client on a loopback name
	s2.Handler().ServeHTTP(rec, req)
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), "agent is disabled") {
		t.Errorf("no agent: %d %s", rec.Code, rec.Body)
	}
}
