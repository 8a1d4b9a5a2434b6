package web

import (
	"net"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// FuzzSafeNext: whatever a login form says as next, the redirect stays on
// this server: a path, with no host a browser could read into it.
func FuzzSafeNext(f *testing.F) {
	for _, s := range []string{"/", "/deployments?x=1", `/\evil.com`, "//evil.com", "/\t/evil.com", "https://evil.com", "/%5Cevil", "/a/../b", "javascript:x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, next string) {
		got := safeNext(next)
		if got != "/" && got != next {
			t.Fatalf("safeNext(%q) = %q: neither the input nor /", next, got)
		}
		if !strings.HasPrefix(got, "/") || strings.HasPrefix(got, "//") || strings.ContainsAny(got, "\\\t\n\r") {
			t.Fatalf("safeNext(%q) = %q leaves the server", next, got)
		}
		base, _ := url.Parse("https://appliance.local/login")
		u, err := url.Parse(got)
		if err != nil || base.ResolveReference(u).Host != "appliance.local" {
			t.Fatalf("safeNext(%q) = %q resolves to another host", next, got)
		}
	})
}

// FuzzAuthHeader: the Bearer scheme is case-insensitive, and nothing else
// is taken for it.
func FuzzAuthHeader(f *testing.F) {
	for _, s := range []string{"Bearer ldg_x", "bearer ldg_x", "BEARER  ldg_x ", "Basic eDp5", "Bearer", "Bearerldg_x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		tok, ok := bearer(h)
		if !ok {
			return
		}
		if !strings.EqualFold(strings.TrimSpace(h)[:6], "bearer") || strings.TrimSpace(tok) != tok {
			t.Fatalf("bearer(%q) = %q", h, tok)
		}
	})
}

// TestConnLimiterEvictsOldest: beyond the limit the oldest anonymous
// connection is closed; promoted ones do not count.
func TestConnLimiterEvictsOldest(t *testing.T) {
	l := newConnLimiter(2)
	pipe := func() (*trackedConn, net.Conn) {
		a, b := net.Pipe()
		return l.add(a), b
	}
	c1, p1 := pipe()
	c2, _ := pipe()
	c2.promote()
	c3, _ := pipe()
	if n := l.count(); n != 2 {
		t.Fatalf("anonymous %d, want 2", n)
	}
	c4, _ := pipe()
	if n := l.count(); n != 2 {
		t.Fatalf("anonymous %d after one over the limit, want 2", n)
	}
	if _, err := p1.Write([]byte("x")); err == nil {
		t.Error("the oldest anonymous connection is still open")
	}
	c3.Close()
	c4.Close()
	c2.Close()
	c1.Close()
	if n := l.count(); n != 0 {
		t.Fatalf("anonymous %d after closing all", n)
	}
}

// TestReqLimiterCounts: the request limiter holds at most max anonymous
// requests (HTTP/2 streams included): a request past max ends the oldest,
// and a request leaves the count when it authenticates or its handler
// returns, once.
func TestReqLimiterCounts(t *testing.T) {
	l := newReqLimiter(3)
	var rs []*trackedReq
	for range 5 {
		rs = append(rs, l.add(httptest.NewRecorder()))
	}
	if n := l.count(); n != 3 {
		t.Fatalf("%d anonymous requests counted, want the cap 3", n)
	}
	if rs[0].elem != nil || rs[1].elem != nil || rs[2].elem == nil {
		t.Errorf("the two oldest were not the ones ended")
	}
	rs[2].forget() // authenticated
	rs[3].finish() // its handler returned
	if n := l.count(); n != 1 {
		t.Errorf("%d counted after one authenticated and one finished, want 1", n)
	}
	rs[2].finish() // an authenticated request's handler returns: no change
	rs[4].finish()
	if n := l.count(); n != 0 {
		t.Errorf("%d counted after every request ended, want 0", n)
	}
	if !rs[4].done {
		t.Errorf("a finished request is not marked done (it could still be ended)")
	}
}
