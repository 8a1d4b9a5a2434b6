package web

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/gin-gonic/gin"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newTestServer(t *testing.T, health func(context.Context) ([]ComponentHealth, bool)) *Server {
	t.Helper()
	s, err := New(Options{Listen: "127.0.0.1:0", Socket: filepath.Join(t.TempDir(), "s.sock"), Health: health,
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("m 1\n")) })})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestHealthz(t *testing.T) {
	healthy := true
	s := newTestServer(t, func(context.Context) ([]ComponentHealth, bool) {
		if healthy {
			return []ComponentHealth{{Name: "db", Status: "ok"}}, true
		}
		return []ComponentHealth{{Name: "db", Status: "failing", Error: "disk full"}}, false
	})
	for _, tc := range []struct {
		healthy bool
		code    int
		status  string
	}{{true, 200, "ok"}, {false, 503, "failing"}} {
		healthy = tc.healthy
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
		var body struct {
			Status     string
			Components []ComponentHealth
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatal(err)
		}
		if rec.Code != tc.code || body.Status != tc.status || len(body.Components) != 1 {
			t.Errorf("healthy=%v: %d %s", tc.healthy, rec.Code, rec.Body)
		}
	}
	// Without credentials it says what fails, not why nor the version; the
	// CLI's socket (like a token or a session) gets the reasons.
	if strings.Contains(s.healthzBody(t, false), "disk full") || strings.Contains(s.healthzBody(t, false), `"version"`) {
		t.Errorf("/healthz without credentials tells the reason or the version: %s", s.healthzBody(t, false))
	}
	if body := s.healthzBody(t, true); !strings.Contains(body, "disk full") || !strings.Contains(body, `"version"`) {
		t.Errorf("/healthz over the CLI's socket lacks the reason or the version: %s", body)
	}
}

// healthzBody is what GET /healthz answers, over the CLI's socket or not.
func (s *Server) healthzBody(t *testing.T, socket bool) string {
	t.Helper()
	req := httptest.NewRequest("GET", "/healthz", nil)
	if socket {
		req = req.WithContext(context.WithValue(req.Context(), connKindKey{}, connUnix))
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	return rec.Body.String()
}

func TestNotFoundIsJSON(t *testing.T) {
	s := newTestServer(t, nil)
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/nothing", nil))
	var body struct{ Error apiError }
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != 404 || body.Error.Code != "not_found" {
		t.Errorf("%d %s (%v)", rec.Code, rec.Body, err)
	}
}

func TestMetricsRoute(t *testing.T) {
	s := newTestServer(t, nil)
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusUnauthorized {
		t.Errorf("without credentials: %d %s", rec.Code, rec.Body)
	}
	pub, err := New(Options{Listen: "127.0.0.1:0", PublicMetrics: true,
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("m 1\n")) })})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	rec = httptest.NewRecorder()
	pub.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "m 1") {
		t.Errorf("public metrics: %d %s", rec.Code, rec.Body)
	}
}

func TestSecondServerOnSameSocketRefused(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "s.sock")
	a, err := New(Options{Listen: "127.0.0.1:0", Socket: sock})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	if _, err := New(Options{Listen: "127.0.0.1:0", Socket: sock}); err == nil || !strings.Contains(err.Error(), "another ledge") {
		t.Fatalf("second server: %v", err)
	}
}

func TestPanicIsJSON500(t *testing.T) {
	s := newTestServer(t, nil)
	s.engine.GET("/boom", func(c *gin.Context) { panic(errors.New("boom")) })
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/boom", nil))
	var body struct{ Error apiError }
	json.Unmarshal(rec.Body.Bytes(), &body)
	if rec.Code != 500 || body.Error.Code != "internal" || body.Error.ID == "" || strings.Contains(rec.Body.String(), "boom") {
		t.Errorf("%d %s", rec.Code, rec.Body)
	}
}

func TestAPIRequiresAuth(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	s, err := New(Options{Listen: "127.0.0.1:0", Socket: sock, Version: "v-test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	// Over TCP (not dev): 401.
	resp, err := http.Get("http://" + s.Addr().String() + "/api/v1/system")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("TCP without credentials: %d, want 401", resp.StatusCode)
	}
	// Over the unix socket: allowed.
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	resp, err = c.Get("http://ledge/api/v1/system")
	if err != nil {
		t.Fatal(err)
	}
	var sys struct{ Version string }
	json.NewDecoder(resp.Body).Decode(&sys)
	resp.Body.Close()
	if resp.StatusCode != 200 || sys.Version != "v-test" {
		t.Errorf("socket: %d %+v", resp.StatusCode, sys)
	}
}

func TestDevAllowsLoopback(t *testing.T) {
	s, err := New(Options{Listen: "127.0.0.1:0", Dev: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	resp, err := http.Get("http://" + s.Addr().String() + "/api/v1/system")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("dev loopback: %d", resp.StatusCode)
	}
}

func TestBindJSONErrors(t *testing.T) {
	s := newTestServer(t, nil)
	type req struct {
		Name string `json:"name"`
		N    int    `json:"n"`
	}
	s.engine.POST("/echo", func(c *gin.Context) {
		var r req
		if bindJSON(c, &r) {
			c.JSON(200, r)
		}
	})
	for body, want := range map[string]string{
		`{"name": "a", "n": 1}`: "",
		`{"name": "a",`:         "malformed JSON body",
		`{"n": "x"}`:            `field "n": got string, want int`,
		`{"bogus": 1}`:          `unknown field "bogus"`,
		``:                      "empty body",
	} {
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest("POST", "/echo", strings.NewReader(body)))
		if want == "" {
			if rec.Code != 200 {
				t.Errorf("%q: %d %s", body, rec.Code, rec.Body)
			}
			continue
		}
		var got struct{ Error apiError }
		json.Unmarshal(rec.Body.Bytes(), &got)
		if rec.Code != 400 || !strings.Contains(got.Error.Message, want) {
			t.Errorf("%q: %d %s, want 400 with %q", body, rec.Code, rec.Body, want)
		}
	}
}

// A data dir so deep that the control socket's path is longer than a unix
// socket can have is refused saying so, not with bind's "invalid argument".
func TestControlSocketPathTooLong(t *testing.T) {
	sock := filepath.Join(t.TempDir(), strings.Repeat("d", 100), "ledge.sock")
	_, err := New(Options{Listen: "127.0.0.1:0", Socket: sock})
	if err == nil || !strings.Contains(err.Error(), "107") || !strings.Contains(err.Error(), "shorter dataDir") {
		t.Fatalf("control socket of %d bytes: %v", len(sock), err)
	}
}

// TestUptimeInDays: after days, uptime reads in days and hours ("3d2h15m"),
// not in hundreds of hours ("74h15m0s"), on /healthz, /api/v1/system and
// so `ledge status`.
func TestUptimeInDays(t *testing.T) {
	for d, want := range map[time.Duration]string{
		42 * time.Second:                              "42s",
		13*time.Minute + 39*time.Second:               "13m39s",
		5*time.Hour + 3*time.Minute + 1500:            "5h3m0s",
		74*time.Hour + 15*time.Minute + 7*time.Second: "3d2h15m",
		24 * time.Hour:                                "1d0h0m",
	} {
		if got := uptimeText(d); got != want {
			t.Errorf("uptimeText(%s) = %q, want %q", d, got, want)
		}
	}
	s := newTestServer(t, nil)
	s.started = time.Now().Add(-(74*time.Hour + 15*time.Minute + 7*time.Second))
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	var body struct{ Uptime string }
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if body.Uptime != "3d2h15m" {
		t.Errorf("/healthz uptime %q, want 3d2h15m", body.Uptime)
	}
}

// TestNotFoundPageForBrowsers: a mistyped dashboard address (or GET
// /logout from a bookmark) shows a page saying so, with a way back, not
// the API's JSON; API paths and clients that do not ask for HTML keep
// the JSON error.
func TestNotFoundPageForBrowsers(t *testing.T) {
	s := newTestServer(t, nil)
	const browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
	for _, tc := range []struct {
		path, accept string
		html         bool
	}{
		{"/dashboard", browser, true},
		{"/logout", browser, true},
		{"/nope/<b>x</b>", browser, true},
		{"/dashboard", "application/json", false},
		{"/dashboard", "", false},
		{"/api/v1/nothing", browser, false},
	} {
		req := httptest.NewRequest("GET", tc.path, nil)
		if tc.accept != "" {
			req.Header.Set("Accept", tc.accept)
		}
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		ct := rec.Header().Get("Content-Type")
		if rec.Code != 404 {
			t.Errorf("%s (%s): %d, want 404", tc.path, tc.accept, rec.Code)
		}
		if !tc.html {
			if !strings.HasPrefix(ct, "application/json") {
				t.Errorf("%s (%s): %s, want the JSON error", tc.path, tc.accept, ct)
			}
			continue
		}
		body := rec.Body.String()
		if !strings.HasPrefix(ct, "text/html") || !strings.Contains(body, `href="/"`) || !strings.Contains(body, "Page not found") || rec.Header().Get("Content-Security-Policy") == "" {
			t.Errorf("%s: %s, CSP %q: %.300s", tc.path, ct, rec.Header().Get("Content-Security-Policy"), body)
		}
		if strings.Contains(body, "<b>x") {
			t.Errorf("%s: the path is not escaped: %.300s", tc.path, body)
		}
	}
}
