package web

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ledge/internal/fault"
)

type fakeHub struct {
	added   HubIdentitySpec
	removed string
	c2d     string
}

func (f *fakeHub) Stats() HubStats { return HubStats{ClientsConnected: 2} }
func (f *fakeHub) Upstream() HubUpstream {
	return HubUpstream{Mode: "mqtt", Broker: "tcp://b:1883", State: "connecting", LastError: "connection refused"}
}
func (f *fakeHub) Identities() []HubIdentity { return []HubIdentity{{Name: "a"}} }
func (f *fakeHub) AddIdentity(_ context.Context, s HubIdentitySpec) (HubCreated, error) {
	if s.Name == "dup" {
		return HubCreated{}, fault.New(fault.Conflict, "identity %q exists", s.Name)
	}
	f.added = s
	return HubCreated{HubIdentity: HubIdentity{Name: s.Name, PrimaryKey: "k"}}, nil
}
func (f *fakeHub) ShowIdentity(name string) (HubCreated, error) {
	if name != "d/m" {
		return HubCreated{}, fault.New(fault.NotFound, "identity %q does not exist", name)
	}
	return HubCreated{HubIdentity: HubIdentity{Name: name}}, nil
}
func (f *fakeHub) RemoveIdentity(_ context.Context, name string) error { f.removed = name; return nil }
func (f *fakeHub) GetTwin(_ context.Context, name string) (HubTwin, error) {
	return HubTwin{Desired: json.RawMessage(`{}`), Reported: json.RawMessage(`{}`)}, nil
}
func (f *fakeHub) PatchDesired(_ context.Context, name string, patch []byte) (HubTwin, error) {
	if !json.Valid(patch) {
		return HubTwin{}, fault.New(fault.Invalid, "twin patch is not a JSON object")
	}
	return HubTwin{Desired: patch, DesiredVersion: 1, Reported: json.RawMessage(`{}`)}, nil
}
func (f *fakeHub) InvokeMethod(_ context.Context, target, method string, p json.RawMessage, timeout time.Duration) (int, json.RawMessage, error) {
	switch target {
	case "off":
		return 0, nil, fault.New(fault.NotFound, "%s is not connected", target)
	case "slow":
		return 0, nil, fault.New(fault.Timeout, "%s did not answer", target)
	}
	return 200, json.RawMessage(`{"ok":true}`), nil
}
func (f *fakeHub) SendC2D(_ context.Context, device string, body []byte, props map[string]string) error {
	f.c2d = device + ":" + string(body)
	return nil
}

func TestHubAPI(t *testing.T) {
	f := &fakeHub{}
	s, err := New(Options{Listen: "127.0.0.1:0", Socket: filepath.Join(t.TempDir(), "s.sock"), Dev: true, HubStatus: f, HubIdentities: f, HubTwins: f, HubMessages: f, Upstream: f})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, tc := range []struct {
		method, path, body string
		code               int
		want               string
	}{
		{"GET", "/api/v1/hub", "", 200, `"clientsConnected":2`},
		{"POST", "/api/v1/hub/identities", `{"name":"dev1"}`, 201, `"primaryKey":"k"`},
		{"POST", "/api/v1/hub/identities", `{"name":"dup"}`, 409, `"conflict"`},
		{"POST", "/api/v1/hub/identities", `{"nme":"x"}`, 400, `unknown field`},
		{"GET", "/api/v1/hub/identities/d/m", "", 200, `"name":"d/m"`},
		{"GET", "/api/v1/hub/identities/nope", "", 404, `does not exist`},
		{"DELETE", "/api/v1/hub/identities/d/m", "", 204, ``},
		{"PATCH", "/api/v1/hub/twins/d", `{"a":1}`, 200, `"desiredVersion":1`},
		{"PATCH", "/api/v1/hub/twins/d", `{bad`, 400, `not a JSON object`},
		{"POST", "/api/v1/hub/methods", `{"target":"d","method":"m","payload":{"x":1}}`, 200, `"status":200`},
		{"POST", "/api/v1/hub/methods", `{"target":"off","method":"m"}`, 404, `not connected`},
		{"POST", "/api/v1/hub/methods", `{"target":"slow","method":"m"}`, 504, `did not answer`},
		{"POST", "/api/v1/hub/methods", `{"method":"m"}`, 400, `required`},
		{"POST", "/api/v1/hub/c2d", `{"device":"d","body":"hi"}`, 204, ``},
		{"GET", "/api/v1/upstream", "", 200, `"lastError":"connection refused"`},
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
		req.RemoteAddr = "127.0.0.1:1234"
		req.Host = "127.0.0.1" // dev mode: a loopback client on a loopback name
		req.Header.Set("Content-Type", "application/json")
		s.Handler().ServeHTTP(rec, req)
		if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.want) {
			t.Errorf("%s %s: %d %s, want %d containing %q", tc.method, tc.path, rec.Code, rec.Body, tc.code, tc.want)
		}
	}
	if f.added.Name != "dev1" || f.removed != "d/m" || f.c2d != "d:hi" {
		t.Errorf("fake saw %+v %q %q", f.added, f.removed, f.c2d)
	}
	// Without a hub or an upstream: 503, saying which key.
	s2, _ := New(Options{Listen: "127.0.0.1:0", Dev: true})
	defer s2.Close()
	for path, want := range map[string]string{"/api/v1/hub": "hub.enabled", "/api/v1/upstream": "hub.upstream"} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", path, nil)
		req.RemoteAddr = "127.0.0.1:1"
		req.Host = "127.0.0.1" // dev mode: a loopback client on a loopback name
		s2.Handler().ServeHTTP(rec, req)
		if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), want) {
			t.Errorf("%s without: %d %s", path, rec.Code, rec.Body)
		}
	}
}
