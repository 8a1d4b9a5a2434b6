package web

import (
	"container/list"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"ledge/internal/fault"
)

// What a client that has not authenticated may hold: a bounded body, a
// bounded time to send it, a bounded time to read the answer, and one of
// at most MaxAnonymousConns connections. Streams (server-sent events,
// MJPEG, WebSockets) are exempt from the read and write timeouts once
// they start: they last as long as the client watches.

// Timeouts bound what a slow or idle client may hold.
type Timeouts struct {
	// Read bounds reading one request, body included (default 60s).
	Read time.Duration
	// Write bounds writing one response (default 60s); event and video
	// streams and WebSockets are exempt.
	Write time.Duration
	// Idle closes a keep-alive connection idle this long (default 2m).
	Idle time.Duration
	// MaxAnonymousConns bounds the TCP connections that have not
	// authenticated (default 256): a new one beyond it closes the oldest
	// of them.
	MaxAnonymousConns int
}

func (t Timeouts) withDefaults() Timeouts {
	if t.Read <= 0 {
		t.Read = time.Minute
	}
	if t.Write <= 0 {
		t.Write = time.Minute
	}
	if t.Idle <= 0 {
		t.Idle = 2 * time.Minute
	}
	if t.MaxAnonymousConns <= 0 {
		t.MaxAnonymousConns = 256
	}
	return t
}

// maxStreams bounds the HTTP/2 requests of one connection at once.
const maxStreams = 32

// Body limits.
const (
	// maxBody bounds request bodies the API reads.
	maxBody = 4 << 20
	// maxLoginBody bounds the login form (a password is at most 72 bytes).
	maxLoginBody = 16 << 10
)

// limitBody caps every request body before anything parses it: a body
// announced over the limit is refused at once, and one that grows over
// it (chunked) fails the read that crosses it.
func limitBody(c *gin.Context) {
	limit := int64(maxBody)
	if c.Request.URL.Path == "/login" || c.Request.URL.Path == "/api/v1/auth/login" {
		limit = maxLoginBody
		if strings.HasPrefix(c.ContentType(), "multipart/") {
			c.Header("Connection", "close")
			writeError(c, http.StatusUnsupportedMediaType, string(fault.Invalid),
				"log in with a form (application/x-www-form-urlencoded) or JSON, not multipart")
			return
		}
	}
	if c.Request.ContentLength > limit {
		c.Header("Connection", "close")
		writeError(c, http.StatusRequestEntityTooLarge, string(fault.TooLarge), fmt.Sprintf("request body over %d bytes", limit))
		return
	}
	if c.Request.Body != nil && c.Request.Body != http.NoBody {
		c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, limit)
	}
	c.Next()
}

// isUpgrade reports whether r asks to switch to a WebSocket.
func isUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// isStream reports whether a response of this content type is a stream
// that lasts as long as the client watches.
func isStream(contentType string) bool {
	return strings.HasPrefix(contentType, "text/event-stream") || strings.HasPrefix(contentType, "multipart/")
}

// endless lifts the read and write deadlines of a stream's connection.
func endless(w http.ResponseWriter) {
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Time{})
	rc.SetWriteDeadline(time.Time{})
}

// connLimiter tracks the TCP connections of a server and keeps at most max
// of those that have not authenticated: accepting one more closes the
// oldest. A connection leaves the count when a request on it
// authenticates (or it upgrades to a WebSocket, whose protocol
// authenticates). Safe for concurrent use.
type connLimiter struct {
	max int

	mu   sync.Mutex // guards anon
	anon *list.List // of *trackedConn, oldest first
}

func newConnLimiter(max int) *connLimiter { return &connLimiter{max: max, anon: list.New()} }

// trackedConn is a connection the limiter counts until it is promoted.
type trackedConn struct {
	net.Conn
	l    *connLimiter
	elem *list.Element // nil once promoted or closed; guarded by l.mu
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.l.forget(c) })
	return c.Conn.Close()
}

// promote takes the connection out of the anonymous count.
func (c *trackedConn) promote() { c.l.forget(c) }

func (l *connLimiter) forget(c *trackedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.elem != nil {
		l.anon.Remove(c.elem)
		c.elem = nil
	}
}

// add counts a new connection, closing the oldest anonymous one when
// there are too many.
func (l *connLimiter) add(nc net.Conn) *trackedConn {
	c := &trackedConn{Conn: nc, l: l}
	var evict *trackedConn
	l.mu.Lock()
	c.elem = l.anon.PushBack(c)
	if l.anon.Len() > l.max {
		evict = l.anon.Front().Value.(*trackedConn)
		l.anon.Remove(evict.elem)
		evict.elem = nil
	}
	l.mu.Unlock()
	if evict != nil {
		evict.Conn.Close()
	}
	return c
}

// count is the number of anonymous connections (for tests and metrics).
func (l *connLimiter) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.anon.Len()
}

// listener wraps a TCP listener so its connections are counted.
type limitedListener struct {
	net.Listener
	l *connLimiter
}

func (ll limitedListener) Accept() (net.Conn, error) {
	c, err := ll.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return ll.l.add(c), nil
}

type trackedKey struct{}

// withTracked puts the connection's tracker into the request context
// (http.Server.ConnContext).
func withTracked(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if t, ok := c.(*trackedConn); ok {
		return context.WithValue(ctx, trackedKey{}, t)
	}
	return ctx
}

// promoteConn takes the request's connection, and the request, out of
// the anonymous counts.
func promoteConn(r *http.Request) {
	if t, ok := r.Context().Value(trackedKey{}).(*trackedConn); ok {
		t.promote()
	}
	if t, ok := r.Context().Value(trackedReqKey{}).(*trackedReq); ok {
		t.forget()
	}
}

// reqLimiter keeps at most max requests in flight that have not
// authenticated, over all connections: HTTP/2 carries up to 250 requests
// at once on one connection, so the connection cap alone let 256
// connections hold 64,000 of them (a slow body, or an answer the client
// opens no flow-control window for). Beyond max, the oldest is ended: its
// reads and writes fail at once (an HTTP/2 stream is reset), and its
// handler returns. A request leaves the count when it authenticates
// (promoteConn), or ends. Safe for concurrent use.
type reqLimiter struct {
	max int

	mu   sync.Mutex // guards anon
	anon *list.List // of *trackedReq, oldest first
}

func newReqLimiter(max int) *reqLimiter { return &reqLimiter{max: max, anon: list.New()} }

// trackedReq is a request the limiter counts until it authenticates or
// ends.
type trackedReq struct {
	l    *reqLimiter
	w    http.ResponseWriter
	elem *list.Element // nil once promoted, ended or evicted; guarded by l.mu

	mu   sync.Mutex // held while ending it; guards done
	done bool       // its handler returned: w may no longer be used
}

// add counts a request, ending the oldest anonymous one when there are
// too many.
func (l *reqLimiter) add(w http.ResponseWriter) *trackedReq {
	r := &trackedReq{l: l, w: w}
	var evict *trackedReq
	l.mu.Lock()
	r.elem = l.anon.PushBack(r)
	if l.anon.Len() > l.max {
		evict = l.anon.Front().Value.(*trackedReq)
		l.anon.Remove(evict.elem)
		evict.elem = nil
	}
	l.mu.Unlock()
	if evict != nil {
		evict.end()
	}
	return r
}

// end makes the request's reads and writes fail now, unless its handler
// already returned.
func (r *trackedReq) end() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return
	}
	rc := http.NewResponseController(r.w)
	past := time.Now().Add(-time.Second)
	rc.SetReadDeadline(past)
	rc.SetWriteDeadline(past)
}

// forget takes the request out of the count.
func (r *trackedReq) forget() {
	r.l.mu.Lock()
	defer r.l.mu.Unlock()
	if r.elem != nil {
		r.l.anon.Remove(r.elem)
		r.elem = nil
	}
}

// finish is called when the handler returned: the request leaves the
// count, and is never ended after.
func (r *trackedReq) finish() {
	r.forget()
	r.mu.Lock()
	r.done = true
	r.mu.Unlock()
}

// count is the number of anonymous requests in flight (tests).
func (l *reqLimiter) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.anon.Len()
}

type trackedReqKey struct{}

// anonymous reports whether the request's connection is counted as not
// authenticated (not the CLI's socket, which has no tracker).
func anonymousConn(r *http.Request) bool {
	t, ok := r.Context().Value(trackedKey{}).(*trackedConn)
	if !ok {
		return false
	}
	t.l.mu.Lock()
	defer t.l.mu.Unlock()
	return t.elem != nil
}
