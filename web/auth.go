package web

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"ledge/internal/fault"
)

// Who may do what:
//
//   - the local CLI over the unix socket (mode 0600): everything;
//   - API tokens (Authorization: Bearer ldg_...): everything, no CSRF
//     token needed (not ambient credentials);
//   - a browser with a session cookie (after logging in with the admin
//     password): everything; state-changing requests also need the
//     session's CSRF token (header X-CSRF-Token, or form field csrf) and
//     must not come from another site;
//   - in dev mode, loopback clients without credentials, but browsers must
//     still be same-origin for state-changing requests;
//   - nobody else: 401 for the API, a redirect to /login for pages.

type authKind int

const (
	authNone authKind = iota
	authSocket
	authDev
	authSession
	authToken
)

func (k authKind) String() string {
	return [...]string{"none", "socket", "dev", "session", "token"}[k]
}

// authInfo is who made a request.
type authInfo struct {
	kind      authKind
	sessionID string
	csrf      string
}

const (
	authKey       = "ledge.auth"
	sessionCookie = "ledge_session"
	csrfHeader    = "X-CSRF-Token"
)

// identify works out who made the request (no decision yet).
func (s *Server) identify(c *gin.Context) authInfo {
	r := c.Request
	if fromSocket(r) {
		return authInfo{kind: authSocket}
	}
	if s.auth != nil {
		if tok, ok := bearer(r.Header.Get("Authorization")); ok {
			if ok, err := s.auth.checkToken(r.Context(), tok); err == nil && ok {
				return authInfo{kind: authToken}
			}
			return authInfo{} // a bad token is not silently downgraded to a cookie
		}
		if ck, err := r.Cookie(sessionCookie); err == nil {
			if sess, err := s.auth.lookupSession(r.Context(), ck.Value); err == nil && sess != nil {
				return authInfo{kind: authSession, sessionID: ck.Value, csrf: sess.csrf}
			}
		}
	}
	if s.opts.Dev && fromLoopback(r) && loopbackHost(r.Host) {
		return authInfo{kind: authDev}
	}
	return authInfo{}
}

// loopbackHost reports whether a Host header names this machine's
// loopback (localhost, 127.0.0.1, [::1]): dev mode trusts loopback
// clients, and a page on another name that resolves to 127.0.0.1 (DNS
// rebinding) is same-origin for the browser, but not a loopback name.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// bearer returns the token of an Authorization header of the Bearer
// scheme, whose name is case-insensitive (RFC 9110 §11.1).
func bearer(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimSpace(tok), true
}

func authOf(c *gin.Context) authInfo {
	if v, ok := c.Get(authKey); ok {
		return v.(authInfo)
	}
	return authInfo{}
}

// stateChanging reports whether the method changes something.
func stateChanging(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

// requireAuth guards API routes: 401 without credentials, 403 for a
// browser request that fails the CSRF or same-origin check.
func (s *Server) requireAuth(c *gin.Context) {
	a := s.identify(c)
	if a.kind == authNone {
		writeError(c, http.StatusUnauthorized, string(fault.Unauthorized),
			"authentication required: log in at /login, or send Authorization: Bearer <token> (ledge admin token create)")
		return
	}
	if msg := s.csrfProblem(c, a); msg != "" {
		writeError(c, http.StatusForbidden, string(fault.Forbidden), msg)
		return
	}
	promoteConn(c.Request)
	c.Set(authKey, a)
	c.Next()
}

// requirePage guards dashboard pages: without credentials, to the login page.
func (s *Server) requirePage(c *gin.Context) {
	a := s.identify(c)
	if a.kind == authNone {
		c.Redirect(http.StatusSeeOther, "/login?next="+url.QueryEscape(c.Request.URL.RequestURI()))
		c.Abort()
		return
	}
	promoteConn(c.Request)
	c.Set(authKey, a)
	c.Next()
}

// csrfProblem returns why a state-changing browser request is refused, or
// "" when it may go on.
func (s *Server) csrfProblem(c *gin.Context, a authInfo) string {
	if !stateChanging(c.Request.Method) || a.kind == authSocket || a.kind == authToken {
		return ""
	}
	if !sameOrigin(c.Request) {
		return "cross-site request refused"
	}
	if a.kind == authSession {
		tok := c.GetHeader(csrfHeader)
		if tok == "" {
			tok = c.PostForm("csrf")
		}
		if tok == "" || tok != a.csrf {
			return "missing or wrong CSRF token (send the page's token in the " + csrfHeader + " header)"
		}
	}
	return ""
}

// sameOrigin checks the Fetch Metadata and Origin headers browsers send:
// a request another site made a browser send is refused.
func sameOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return false
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host != r.Host {
			return false
		}
	}
	return true
}

// loginLimiter slows down password guessing. Each attempt is reserved
// (and counted as a failure) before the password is checked, so attempts
// sent at once are counted as they arrive, not after their checks:
//
//   - per client (an IPv4 address, or an IPv6 /64, which one host
//     usually holds whole): after 5 failures in a row, each further
//     attempt waits 30 s, doubling to 15 min;
//   - in all, whatever the address: at most globalBurst failures at once,
//     then one per globalEvery, so many addresses cannot guess faster.
//
// A success clears its client and gives its reservation back. Passwords
// are checked one at a time (bcrypt takes tens of milliseconds of CPU), so
// a flood of logins cannot take more than one core from the pipelines; an
// attempt that waits longer than loginQueueWait for its turn is answered
// "try again" unchecked and uncounted, never left to the write timeout.
// Safe for concurrent use.
type loginLimiter struct {
	one chan struct{} // one password check at a time

	mu      sync.Mutex // guards the fields below
	clients map[string]*loginState
	tokens  float64   // failures allowed now, in all
	filled  time.Time // when tokens was last refilled
}

type loginState struct {
	failures int
	until    time.Time
}

const (
	freeFailures = 5
	firstLockout = 30 * time.Second
	maxLockout   = 15 * time.Minute
	globalBurst  = 30
	globalEvery  = 3 * time.Second
)

// loginQueueWait bounds the wait for a turn to check a password (a
// variable for tests).
var loginQueueWait = 10 * time.Second

func newLoginLimiter() *loginLimiter {
	return &loginLimiter{one: make(chan struct{}, 1), clients: map[string]*loginState{}, tokens: globalBurst}
}

// turn waits for the one password check at a time, at most
// loginQueueWait and while ctx lasts; it reports whether it got it. The
// caller gives it back with done.
func (l *loginLimiter) turn(ctx context.Context) bool {
	t := time.NewTimer(loginQueueWait)
	defer t.Stop()
	select {
	case l.one <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// done gives the turn back.
func (l *loginLimiter) done() { <-l.one }

// locked reports how long client must still wait, without reserving.
func (l *loginLimiter) locked(client string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if st := l.clients[client]; st != nil && now.Before(st.until) {
		return st.until.Sub(now)
	}
	return 0
}

// begin reserves an attempt for client. When the client, or every
// client, must wait, it returns how long and whether the limit is the
// appliance-wide one, and reserves nothing.
func (l *loginLimiter) begin(client string, now time.Time) (wait time.Duration, global bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.clients[client]
	if st != nil && now.Before(st.until) {
		return st.until.Sub(now), false
	}
	if !l.filled.IsZero() {
		l.tokens = min(globalBurst, l.tokens+float64(now.Sub(l.filled))/float64(globalEvery))
	}
	l.filled = now
	if l.tokens < 1 {
		return time.Duration((1 - l.tokens) * float64(globalEvery)), true
	}
	l.tokens--
	if st == nil {
		if len(l.clients) > 10000 { // bound memory under a spray of addresses
			for k, v := range l.clients {
				if now.After(v.until) {
					delete(l.clients, k)
				}
			}
		}
		st = &loginState{}
		l.clients[client] = st
	}
	st.failures++
	if st.failures >= freeFailures {
		d := firstLockout << min(st.failures-freeFailures, 10)
		st.until = now.Add(min(d, maxLockout))
	}
	return 0, false
}

// succeeded clears client after the right password and gives its
// reservation back.
func (l *loginLimiter) succeeded(client string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.clients, client)
	l.tokens = min(globalBurst, l.tokens+1)
}

// limitKey is what the limiter counts a client by: its IPv4 address, or
// the /64 of its IPv6 address.
func limitKey(addr string) string {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	ip = ip.Unmap()
	if ip.Is4() {
		return ip.String()
	}
	p, _ := ip.Prefix(64)
	return p.String()
}

func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
