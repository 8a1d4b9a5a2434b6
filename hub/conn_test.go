package hub

import (
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
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

// failingListener fails Accept with EMFILE n times, then reports itself
// closed: a process out of file descriptors, injected.
type failingListener struct {
	net.Listener
	n int
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.n > 0 {
		l.n--
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return nil, net.ErrClosed
}

// TestAcceptErrorsLogged: an accept that fails (EMFILE under a
// file-descriptor limit) is logged, once for a run of failures (at most
// every 10 s), and the listener keeps accepting until it is closed.
func TestAcceptErrorsLogged(t *testing.T) {
	logs := &lockedBuffer{}
	l := &netListener{id: "t1", l: &failingListener{n: 5}, log: slog.New(slog.NewTextHandler(logs, nil))}
	done := make(chan struct{})
	go func() { l.Serve(nil); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return once the listener was closed")
	}
	out := logs.String()
	if n := strings.Count(out, "mqtt accept failed"); n != 1 || !strings.Contains(out, "too many open files") || !strings.Contains(out, "listener=t1") {
		t.Errorf("5 failed accepts logged %d times, want once with the error and the listener:\n%s", n, out)
	}
}
