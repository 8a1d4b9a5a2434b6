package hub

import (
	"net"
	"testing"
	"time"
)

type deadlineRecorder struct {
	net.Conn
	set []time.Time
}

func (d *deadlineRecorder) SetDeadline(t time.Time) error { d.set = append(d.set, t); return nil }

func TestCoarseDeadline(t *testing.T) {
	rec := &deadlineRecorder{}
	c := &coarseConn{Conn: rec}
	base := time.Unix(1000, 0)
	for i := range 100 {
		c.SetDeadline(base.Add(time.Duration(i) * 5 * time.Millisecond)) // 100 packets in half a second
	}
	if len(rec.set) != 1 || !rec.set[0].Equal(base.Add(time.Second)) {
		t.Fatalf("deadlines set %v, want one at base+1s", rec.set)
	}
	c.SetDeadline(base.Add(1500 * time.Millisecond)) // later than what the socket has
	if len(rec.set) != 2 || !rec.set[1].After(base.Add(1500*time.Millisecond)) {
		t.Errorf("deadline not moved on: %v", rec.set)
	}
	c.SetDeadline(time.Time{})
	if len(rec.set) != 3 || !rec.set[2].IsZero() {
		t.Errorf("zero deadline not passed on: %v", rec.set)
	}
}
