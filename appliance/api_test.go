package appliance

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"ledge/web"
)

// TestAPIBadInput drives every /api/v1 route of a whole appliance with bad
// input: each answers 4xx with a JSON error (a stable code and a message
// a person can act on), and nothing changes.
func TestAPIBadInput(t *testing.T) {
	d := startDashboard(t, nil)
	tok, err := web.CreateToken(t.Context(), d.app.DB(), "api-test")
	if err != nil {
		t.Fatal(err)
	}
	call := func(method, path, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, d.base+"/api/v1"+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		var out map[string]any
		json.Unmarshal(data, &out)
		return resp.StatusCode, out
	}

	// A pipeline and a deployment to compare against afterwards.
	if code, out := call("POST", "/pipelines", `{"name": "cam", "source": {"url": "testpattern:", "fps": 5}}`); code != 201 {
		t.Fatalf("create pipeline: %d %v", code, out)
	}
	if code, out := call("POST", "/deployments", `{"manifest": "version: \"1\"\n"}`); code != 202 {
		t.Fatalf("apply an empty deployment: %d %v", code, out)
	}

	for _, tc := range []struct {
		method, path, body string
		status             int
		code, msg          string
	}{
		{"POST", "/auth/login", `{"password": `, 400, "invalid", "malformed JSON"},
		{"POST", "/hub/identities", `{"name": "a b"}`, 400, "invalid", ""},
		{"POST", "/hub/identities", `{"name": "x", "kind": "robot"}`, 400, "invalid", "robot"},
		{"POST", "/hub/identities", `not json`, 400, "invalid", "malformed JSON"},
		{"GET", "/hub/identities/nobody", "", 404, "not_found", "nobody"},
		{"DELETE", "/hub/identities/nobody", "", 404, "not_found", "nobody"},
		{"GET", "/hub/twins/nobody", "", 404, "not_found", "nobody"},
		{"PATCH", "/hub/twins/nobody", `{"a": 1}`, 404, "not_found", ""},
		{"POST", "/hub/methods", `{"target": "nobody", "method": "reboot"}`, 404, "not_found", ""},
		{"POST", "/hub/methods", `{"target": "x", "method": "m", "timeoutSeconds": 9000}`, 400, "invalid", "timeoutSeconds"},
		{"POST", "/hub/c2d", `{"device": "nobody", "body": {}}`, 404, "not_found", ""},
		{"POST", "/hub/c2d", `{"device": 5}`, 400, "invalid", "device"},
		{"GET", "/deployments?limit=0", "", 400, "invalid", "limit"},
		{"POST", "/deployments", `{"manifest": "version: \"2\"\nmodules:\n  cam: {image: x, restartPolicy: sometimes}\n"}`, 400, "invalid", "restartPolicy"},
		{"POST", "/deployments", `{"manifest": ""}`, 400, "invalid", "manifest"},
		{"POST", "/deployments", `{"manifst": "x"}`, 400, "invalid", "manifst"},
		{"POST", "/deployments/check", `{"manifest": "version: \"2\"\nroutes:\n  r: FROM /messages INTO nowhere\n"}`, 400, "invalid", "route"},
		// Manifests are at most 1 MiB, request bodies at most 4 MiB (a
		// signed envelope escapes its manifest).
		{"POST", "/deployments/check", `{"manifest": "version: \"2\"\n# ` + strings.Repeat("x", 1<<20) + `"}`, 400, "invalid", "over the limit of 1048576"},
		{"POST", "/deployments", `{"manifest": "version: \"2\"\n# ` + strings.Repeat("x", 1<<20) + `"}`, 400, "invalid", "over the limit of 1048576"},
		{"POST", "/deployments", `{"manifest": "version: \"2\"\n# ` + strings.Repeat("x", 4<<20) + `"}`, 413, "too_large", "over 4194304 bytes"},
		{"POST", "/deployments/rollback", "", 409, "conflict", ""},
		{"GET", "/deployments/abc/manifest", "", 400, "invalid", "deployment id"},
		{"GET", "/deployments/999/manifest", "", 404, "not_found", "999"},
		{"POST", "/modules/ghost/restart", "", 404, "not_found", "ghost"},
		{"GET", "/modules/ghost/logs", "", 404, "not_found", "ghost"},
		{"GET", "/modules/ghost/logs?tail=-1", "", 400, "invalid", "tail"},
		{"POST", "/pipelines", ``, 400, "invalid", "empty body"},
		{"POST", "/pipelines", `{"name": "bad", "source": {"url": "ftp://x"}}`, 400, "invalid", "unknown scheme"},
		{"POST", "/pipelines", `{"name": "bad", "source": {"url": "testpattern:"}, "zones": [{"name": "z", "polygon": [[0,0],[1,1]]}]}`, 400, "invalid", "polygon"},
		{"POST", "/pipelines", `{"name": "bad", "source": {"url": "testpattern:"}, "detect": {"model": "nosuchmodel"}}`, 400, "invalid", "nosuchmodel"},
		{"POST", "/pipelines", `{"name": "bad", "source": {"url": "testpattern:"}, "detect": {"model": "/x.onnx", "threshold": 1.5}}`, 400, "invalid", "threshold"},
		{"PUT", "/pipelines/other", `{"name": "cam", "source": {"url": "testpattern:"}}`, 400, "invalid", "other"},
		{"GET", "/pipelines/ghost", "", 404, "not_found", "ghost"},
		{"DELETE", "/pipelines/ghost", "", 404, "not_found", "ghost"},
		{"POST", "/pipelines/ghost/start", "", 404, "not_found", "ghost"},
		{"POST", "/pipelines/ghost/stop", "", 404, "not_found", "ghost"},
		{"POST", "/pipelines/ghost/reload", "", 404, "not_found", "ghost"},
		{"GET", "/pipelines/ghost/history", "", 404, "not_found", "ghost"},
		{"GET", "/pipelines/ghost/stream.mjpeg", "", 404, "not_found", "ghost"},
		{"GET", "/pipelines/ghost/frame.jpg", "", 404, "not_found", "ghost"},
		{"GET", "/events?from=yesterday", "", 400, "invalid", "from"},
		{"GET", "/events?limit=5000", "", 400, "invalid", "limit"},
		{"GET", "/events?before=x", "", 400, "invalid", "before"},
		{"GET", "/events?type=object.enter", "", 400, "invalid", "/api/v1/events/raw"},
		{"GET", "/events?active=maybe", "", 400, "invalid", "active"},
		{"GET", "/events/raw?active=true", "", 400, "invalid", "active"},
		{"GET", "/events/raw?limit=0", "", 400, "invalid", "limit"},
		{"GET", "/pipelines/cam/stream.mjpeg?fps=100", "", 400, "invalid", "fps"},
		{"GET", "/snapshots/..%2F..%2Fetc%2Fpasswd", "", 400, "invalid", "snapshot"},
		{"GET", "/models/ghost", "", 404, "not_found", "ghost"},
		{"POST", "/models", `{"name": "m", "version": "1", "url": "http://insecure/m.onnx", "sha256": "00"}`, 400, "invalid", ""},
		{"POST", "/models", `{"name": "../etc", "version": "1", "url": "https://h/m.onnx", "sha256": "` + strings.Repeat("a", 64) + `"}`, 400, "invalid", "name"},
		{"POST", "/models", `{"name":`, 400, "invalid", ""},
		{"POST", "/models/ghost/activate", `{}`, 400, "invalid", "version"},
		{"POST", "/models/ghost/activate", `{"version": "1"}`, 404, "not_found", "ghost"},
		{"POST", "/models/ghost/rollback", "", 404, "not_found", "ghost"},
		{"GET", "/nothing/here", "", 404, "not_found", "no route"},
	} {
		status, out := call(tc.method, tc.path, tc.body)
		e, _ := out["error"].(map[string]any)
		msg, _ := e["message"].(string)
		if status != tc.status || e["code"] != tc.code || msg == "" || !strings.Contains(msg, tc.msg) {
			t.Errorf("%s %s %.200s: %d %.500v; want %d %s mentioning %q", tc.method, tc.path, tc.body, status, out, tc.status, tc.code, tc.msg)
		}
	}

	// Nothing changed: the one pipeline, the one deployment, no identity.
	_, pl := call("GET", "/pipelines", "")
	if ps, _ := pl["pipelines"].([]any); len(ps) != 1 {
		t.Errorf("pipelines after bad input: %v", pl)
	}
	_, hist := call("GET", "/deployments", "")
	if ds, _ := hist["deployments"].([]any); len(ds) != 1 {
		t.Errorf("deployments after bad input: %v", hist)
	}
	if _, ms := call("GET", "/models", ""); ms["models"] != nil {
		if l, _ := ms["models"].([]any); len(l) != 0 {
			t.Errorf("models after bad input: %v", ms)
		}
	}
	_, ids := call("GET", "/hub/identities", "")
	list, _ := ids["identities"].([]any)
	for _, i := range list {
		if n := i.(map[string]any)["name"]; n == "bad" || n == "x" || n == "a b" {
			t.Errorf("identity %v was created", n)
		}
	}
}

// TestPipelineSpecShownWithoutPasswords: the API shows each pipeline's spec
// (the Pipelines page does), with the passwords of its camera and action
// URLs masked.
func TestPipelineSpecShownWithoutPasswords(t *testing.T) {
	d := startDashboard(t, nil)
	tok := apiToken(t, d)
	apiCall(t, d, tok, "POST", "/api/v1/pipelines", `{"name": "cam", "source": {"url": "rtsp://admin:hunter2secret@127.0.0.1:1/stream"},
		"actions": [{"type": "webhook", "url": "https://bot:tokensecret@hooks.example/x", "headers": {"X-Key": "headersecret"}}]}`, 201)
	for _, path := range []string{"/api/v1/pipelines", "/api/v1/pipelines/cam"} {
		body := apiCall(t, d, tok, "GET", path, "", 200)
		if !strings.Contains(body, `"spec"`) || !strings.Contains(body, "127.0.0.1:1/stream") || !strings.Contains(body, "hooks.example") {
			t.Errorf("GET %s shows no spec: %s", path, body)
		}
		for _, secret := range []string{"hunter2secret", "tokensecret", "headersecret"} {
			if strings.Contains(body, secret) {
				t.Errorf("GET %s shows %q: %s", path, secret, body)
			}
		}
	}
}
