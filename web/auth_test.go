package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"ledge/internal/testenv"
)

// authServer is a real server on loopback with a database, started for
// one test.
type authServer struct {
	*Server
	url string
}

func startAuthServer(t *testing.T, password string) *authServer {
	t.Helper()
	db := testenv.DB(t)
	if password != "" {
		if err := SetAdminPassword(t.Context(), db, password); err != nil {
			t.Fatal(err)
		}
	}
	s, err := New(Options{Listen: "127.0.0.1:0", DB: db, DeviceID: "gw-test", Version: "t"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return &authServer{Server: s, url: "http://" + s.Addr().String()}
}

// browser is an http.Client with a cookie jar that does not follow
// redirects.
func browser(t *testing.T) *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func loginJSON(t *testing.T, c *http.Client, base, password string) (int, string) {
	t.Helper()
	resp, err := c.Post(base+"/api/v1/auth/login", "application/json", strings.NewReader(`{"password":"`+password+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ CsrfToken string }
	json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body.CsrfToken
}

func TestLoginSessionAndCSRF(t *testing.T) {
	s := startAuthServer(t, "correct horse battery")
	c := browser(t)

	// Pages redirect to the login page, the API says 401.
	resp, _ := c.Get(s.url + "/")
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/login") {
		t.Fatalf("page without session: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if code, _ := loginJSON(t, c, s.url, "wrong password!"); code != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d", code)
	}
	code, csrf := loginJSON(t, c, s.url, "correct horse battery")
	if code != 200 || csrf == "" {
		t.Fatalf("login: %d csrf %q", code, csrf)
	}
	u, _ := url.Parse(s.url)
	ck := c.Jar.Cookies(u)
	if len(ck) != 1 || ck[0].Name != sessionCookie {
		t.Fatalf("cookies %v", ck)
	}
	// The cookie's attributes (the jar hides them): HttpOnly, SameSite=Strict.
	resp, _ = browser(t).Post(s.url+"/api/v1/auth/login", "application/json", strings.NewReader(`{"password":"correct horse battery"}`))
	setCookie := resp.Header.Get("Set-Cookie")
	resp.Body.Close()
	if !strings.Contains(setCookie, "HttpOnly") || !strings.Contains(setCookie, "SameSite=Strict") || strings.Contains(setCookie, "Secure") {
		t.Errorf("Set-Cookie %q: want HttpOnly, SameSite=Strict, not Secure over plain HTTP", setCookie)
	}

	resp, _ = c.Get(s.url + "/")
	page := readAll(resp)
	if resp.StatusCode != 200 || !strings.Contains(page, `name="csrf-token" content="`+csrf+`"`) || !strings.Contains(page, "gw-test") {
		t.Fatalf("overview after login: %d", resp.StatusCode)
	}
	resp, _ = c.Get(s.url + "/api/v1/system")
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("API with session: %d", resp.StatusCode)
	}

	// A state-changing request without the CSRF token is refused; with it, it passes.
	req, _ := http.NewRequest("POST", s.url+"/api/v1/auth/logout", nil)
	resp, _ = c.Do(req)
	body := readAll(resp)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "CSRF") {
		t.Fatalf("POST without CSRF: %d %s", resp.StatusCode, body)
	}
	// From another site, even with the token: refused.
	req, _ = http.NewRequest("POST", s.url+"/api/v1/auth/logout", nil)
	req.Header.Set(csrfHeader, csrf)
	req.Header.Set("Origin", "http://evil.example")
	resp, _ = c.Do(req)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-origin POST: %d", resp.StatusCode)
	}
	req, _ = http.NewRequest("POST", s.url+"/api/v1/auth/logout", nil)
	req.Header.Set(csrfHeader, csrf)
	resp, _ = c.Do(req)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("logout with CSRF: %d", resp.StatusCode)
	}
	resp, _ = c.Get(s.url + "/api/v1/system")
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("API after logout: %d", resp.StatusCode)
	}
}

func TestLoginForm(t *testing.T) {
	s := startAuthServer(t, "correct horse battery")
	c := browser(t)
	resp, _ := c.PostForm(s.url+"/login", url.Values{"password": {"nope nope nope"}})
	body := readAll(resp)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "wrong password") {
		t.Fatalf("wrong password form: %d", resp.StatusCode)
	}
	resp, _ = c.PostForm(s.url+"/login", url.Values{"password": {"correct horse battery"}, "next": {"/?x=1"}})
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/?x=1" {
		t.Fatalf("login form: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	// An open redirect is not possible.
	resp, _ = browser(t).PostForm(s.url+"/login", url.Values{"password": {"correct horse battery"}, "next": {"//evil.example/"}})
	resp.Body.Close()
	if resp.Header.Get("Location") != "/" {
		t.Errorf("next=//evil: redirected to %q", resp.Header.Get("Location"))
	}
}

func TestLoginRateLimit(t *testing.T) {
	s := startAuthServer(t, "correct horse battery")
	c := browser(t)
	for i := range freeFailures {
		if code, _ := loginJSON(t, c, s.url, "guess guess "+string(rune('a'+i))); code != http.StatusUnauthorized {
			t.Fatalf("attempt %d: %d", i, code)
		}
	}
	// Locked: even the right password waits.
	resp, err := c.Post(s.url+"/api/v1/auth/login", "application/json", strings.NewReader(`{"password":"correct horse battery"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("after %d failures: %d, Retry-After %q", freeFailures, resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

// TestLoginChecksOneAtATime: passwords are checked one at a time; a
// login that waits longer than loginQueueWait for its turn is answered 429
// "try again" (not left to the write timeout, which closed the
// connection), and such answers are not counted as failures.
func TestLoginChecksOneAtATime(t *testing.T) {
	saved := loginQueueWait
	loginQueueWait = 300 * time.Millisecond
	t.Cleanup(func() { loginQueueWait = saved })
	s := startAuthServer(t, "correct horse battery")
	c := browser(t)

	s.limiter.one <- struct{}{} // a check in progress
	for i := range freeFailures + 2 {
		start := time.Now()
		resp, err := c.Post(s.url+"/api/v1/auth/login", "application/json", strings.NewReader(`{"password":"correct horse battery"}`))
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ Error struct{ Message string } }
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "5" || !strings.Contains(body.Error.Message, "one at a time") {
			t.Fatalf("login %d while a check runs: %d, Retry-After %q, %q", i, resp.StatusCode, resp.Header.Get("Retry-After"), body.Error.Message)
		}
		if d := time.Since(start); d < loginQueueWait {
			t.Fatalf("login %d answered after %s, before its wait (%s) ended", i, d, loginQueueWait)
		}
	}
	<-s.limiter.one // the check ends

	// None of those counted: the right password gets in at once.
	if code, _ := loginJSON(t, c, s.url, "correct horse battery"); code != http.StatusOK {
		t.Fatalf("the right password after %d unchecked answers: %d", freeFailures+2, code)
	}
}

func TestLimiterBackoff(t *testing.T) {
	l := newLoginLimiter()
	now := time.Unix(1000, 0)
	fail := func(client string) time.Duration {
		t.Helper()
		w, _ := l.begin(client, now)
		return w
	}
	for range freeFailures {
		if w := fail("a"); w != 0 {
			t.Fatalf("locked (%s) before the free failures are used", w)
		}
	}
	if w := fail("a"); w != firstLockout {
		t.Fatalf("first lockout %s", w)
	}
	now = now.Add(firstLockout)
	fail("a")
	if w := fail("a"); w != 2*firstLockout {
		t.Fatalf("second lockout %s", w)
	}
	for range 20 {
		now = now.Add(maxLockout)
		fail("a")
	}
	if w := fail("a"); w != maxLockout {
		t.Fatalf("capped lockout %s", w)
	}
	if fail("b") != 0 {
		t.Fatal("another client is locked too")
	}
	l.succeeded("a")
	if fail("a") != 0 {
		t.Fatal("success does not clear the lockout")
	}
}

// TestLimiterGlobal: failures from many clients are limited in all, and
// refilled over time; a success gives its reservation back.
func TestLimiterGlobal(t *testing.T) {
	l := newLoginLimiter()
	now := time.Unix(1000, 0)
	for i := range globalBurst {
		if w, _ := l.begin(fmt.Sprint("c", i), now); w != 0 {
			t.Fatalf("attempt %d refused: %s", i, w)
		}
	}
	w, global := l.begin("new", now)
	if w != globalEvery || !global {
		t.Fatalf("over the burst: wait %s global %v", w, global)
	}
	l.succeeded("c0")
	if w, _ := l.begin("new", now); w != 0 {
		t.Fatalf("a success did not give its reservation back: %s", w)
	}
	now = now.Add(globalEvery)
	if w, _ := l.begin("later", now); w != 0 {
		t.Fatalf("no refill after %s: %s", globalEvery, w)
	}
}

// TestLimitKey: IPv6 clients are counted by /64.
func TestLimitKey(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"192.0.2.7", "192.0.2.7"},
		{"::ffff:192.0.2.7", "192.0.2.7"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"},
		{"2001:db8:1:3::1", "2001:db8:1:3::/64"},
		{"not an address", "not an address"},
	} {
		if got := limitKey(tc.addr); got != tc.want {
			t.Errorf("limitKey(%q) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}

func TestAPITokens(t *testing.T) {
	s := startAuthServer(t, "correct horse battery")
	tok, err := s.auth.createToken(t.Context(), "ci")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.auth.createToken(t.Context(), "ci"); err == nil {
		t.Error("duplicate token name accepted")
	}
	do := func(method, bearer string) int {
		req, _ := http.NewRequest(method, s.url+"/api/v1/auth/whoami", nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := do("GET", tok); code != 200 {
		t.Errorf("valid token: %d", code)
	}
	if code := do("GET", tok+"x"); code != http.StatusUnauthorized {
		t.Errorf("wrong token: %d", code)
	}
	if code := do("GET", ""); code != http.StatusUnauthorized {
		t.Errorf("no token: %d", code)
	}
	list, _ := s.auth.listTokens(t.Context())
	if len(list) != 1 || list[0].Name != "ci" || list[0].LastUsedAt == "" {
		t.Errorf("tokens %+v", list)
	}
	if err := s.auth.revokeToken(t.Context(), "ci"); err != nil {
		t.Fatal(err)
	}
	if code := do("GET", tok); code != http.StatusUnauthorized {
		t.Errorf("revoked token: %d", code)
	}
}

func TestFirstStartPassword(t *testing.T) {
	db := testenv.DB(t)
	st, err := openAuthStore(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	// A keeper that fails leaves no password set.
	if _, err := EnsureAdminPassword(t.Context(), db, func(string) error { return errors.New("disk full") }); err == nil {
		t.Fatal("a failed keeper did not fail")
	}
	var kept string
	pw, err := EnsureAdminPassword(t.Context(), db, func(p string) error { kept = p; return nil })
	if err != nil || len(pw) < minPassword || kept != pw {
		t.Fatalf("generated %q (kept %q), %v", pw, kept, err)
	}
	if ok, _ := st.checkPassword(t.Context(), pw); !ok {
		t.Fatal("generated password does not log in")
	}
	if again, _ := EnsureAdminPassword(t.Context(), db, func(string) error { t.Fatal("kept again"); return nil }); again != "" {
		t.Fatal("a second start generated another password")
	}
	if err := st.setPassword(t.Context(), "short"); err == nil {
		t.Error("short password accepted")
	}
}

func TestSessionsEndOnPasswordChange(t *testing.T) {
	s := startAuthServer(t, "correct horse battery")
	c := browser(t)
	loginJSON(t, c, s.url, "correct horse battery")
	if err := s.auth.setPassword(t.Context(), "another long password"); err != nil {
		t.Fatal(err)
	}
	resp, _ := c.Get(s.url + "/api/v1/system")
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("session survived a password change: %d", resp.StatusCode)
	}
}

func readAll(resp *http.Response) string {
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String()
		}
	}
}

// TestLoopbackHost: dev mode trusts loopback names only (a name rebound
// to 127.0.0.1 is not one).
func TestLoopbackHost(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1:8080": true, "localhost": true, "LOCALHOST:80": true, "[::1]:8080": true, "127.9.9.9": true,
		"app.localhost:8080": true, "localhost.:80": true,
		"rebind.example:8080": false, "192.168.1.5": false, "localhost.evil.example": false, "": false, "[::ffff:10.0.0.1]:1": false,
	} {
		if got := loopbackHost(host); got != want {
			t.Errorf("loopbackHost(%q) = %v, want %v", host, got, want)
		}
	}
}
