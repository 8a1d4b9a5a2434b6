package hub

import (
	"crypto/tls"
	"net"
	"sync"
	"time"
)

// coarseConn wraps a client connection so that mochi's per-packet
// SetDeadline (it refreshes the keep-alive deadline on every packet read,
// each a timer update on the read and the write side) reaches the socket
// at most once a second. The deadline set is the asked one plus the
// granularity, so a client is never cut early, and at most a second late.
type coarseConn struct {
	net.Conn
	mu   sync.Mutex // guards last
	last time.Time  // the deadline the socket has
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
