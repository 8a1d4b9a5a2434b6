package hub

import (
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"
)

// coarseConn wraps a client connection so that mochi's per-packet
// SetDeadline (it refreshes the keep-alive deadline on every packet read,
// each a timer update on the read and the write side) reaches the socket
// at most once a second. The deadline set is the asked one plus the
// granularity, so a client is never cut early, and at most a second late.
type coarseConn struct {
	net.Conn
	mu   sync.Mutex    // guards last and pend
	last time.Time     // the deadline the socket has (from mochi)
	pend *pendingConns // set while the connection has not authenticated
}

const deadlineGranularity = time.Second

func (c *coarseConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.IsZero() {
		if c.last.IsZero() {
			return nil
		}
		c.last = time.Time{}
		return c.Conn.SetDeadline(t)
	}
	// Still later than asked, and not more than the granularity later:
	// leave the socket alone.
	if !c.last.IsZero() && !c.last.Before(t) && c.last.Sub(t) <= deadlineGranularity {
		return nil
	}
	c.last = t.Add(deadlineGranularity)
	return c.Conn.SetDeadline(c.last)
}

// unwrapTLS finds the TLS connection under a client's conn, if any.
func unwrapTLS(c net.Conn) (*tls.Conn, bool) {
	if cc, ok := c.(*coarseConn); ok {
		c = cc.Conn
	}
	tc, ok := c.(*tls.Conn)
	return tc, ok
}

// pendingConns tracks connections that have not authenticated yet: each
// has until its deadline (TLS handshake, WebSocket upgrade and CONNECT),
// and past max the oldest is closed, so silent connections cannot hold
// the file descriptors every legitimate client and the dashboard need.
type pendingConns struct {
	max int

	mu      sync.Mutex // guards the fields below
	seq     uint64
	conns   map[*coarseConn]uint64 // -> admission order
	evicted uint64
}

func newPendingConns(max int) *pendingConns {
	return &pendingConns{max: max, conns: map[*coarseConn]uint64{}}
}

// admit registers c; when the bound is reached the oldest pending
// connection is closed to make room (a legitimate client authenticates in
// milliseconds, so it is rarely the oldest).
func (p *pendingConns) admit(c *coarseConn) {
	p.mu.Lock()
	var victim *coarseConn
	if len(p.conns) >= p.max {
		oldest := ^uint64(0)
		for cc, n := range p.conns {
			if n < oldest {
				oldest, victim = n, cc
			}
		}
		delete(p.conns, victim)
		p.evicted++
	}
	p.seq++
	p.conns[c] = p.seq
	c.pend = p
	p.mu.Unlock()
	if victim != nil {
		victim.Conn.Close()
	}
}

func (p *pendingConns) done(c *coarseConn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (p *pendingConns) stats() (pending int, evicted uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns), p.evicted
}

// authenticated ends c's pending state: its CONNECT passed. The connect
// deadline is lifted (mochi set the keep-alive one, or none for a
// keep-alive of 0).
func (c *coarseConn) authenticated() {
	c.release()
	c.mu.Lock()
	clear := c.last.IsZero()
	c.mu.Unlock()
	if clear {
		c.Conn.SetDeadline(time.Time{})
	}
}

// release ends c's pending state, its deadline left as it is.
func (c *coarseConn) release() {
	c.mu.Lock()
	p := c.pend
	c.pend = nil
	c.mu.Unlock()
	if p != nil {
		p.done(c)
	}
}

func (c *coarseConn) Close() error {
	c.mu.Lock()
	p := c.pend
	c.pend = nil
	c.mu.Unlock()
	if p != nil {
		p.done(c)
	}
	return c.Conn.Close()
}

// SyscallConn exposes the socket of a plain TCP connection, so mochi (as
// patched) can write a message to an idle subscriber from the publisher's
// goroutine with one non-blocking write; TLS and WebSocket connections
// have none, and their messages go through the client's write goroutine.
func (c *coarseConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errNoRawConn
}

var errNoRawConn = errors.New("no raw socket under this connection")
