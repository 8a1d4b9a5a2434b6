package hub

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// refusalLog keeps refused connections from flooding the log: one host
// can send thousands of CONNECTs a second, and journald (10,000 lines in
// 30 s per service by default) then drops everything ledge says. The
// first refusal of each address (IPv4, or IPv6 /64) and reason in a
// window is logged at once; the others are counted, and said in one line
// per address when the window ends. At most maxKeys addresses and reasons
// are logged in a window; the refusals of others are counted together.
// Safe for concurrent use.
type refusalLog struct {
	mu      sync.Mutex // guards the fields below
	window  time.Duration
	maxKeys int
	start   time.Time
	keys    map[refusalKey]*refusalCount
	other   refusalCount
}

type refusalKey struct{ addr, reason string }

type refusalCount struct {
	n      int
	client string // the last refused client id
}

func newRefusalLog() *refusalLog {
	return &refusalLog{window: time.Minute, maxKeys: 100, keys: map[refusalKey]*refusalCount{}}
}

func (r *refusalLog) setWindow(d time.Duration) {
	r.mu.Lock()
	r.window = d
	r.mu.Unlock()
}

// note reports whether a refusal of a client at remote, for reason, is
// to be logged now; when not, it is counted.
func (r *refusalLog) note(remote, client, reason string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.start.IsZero() {
		r.start = now
	}
	k := refusalKey{addrOf(remote), clip(reason)}
	if c, ok := r.keys[k]; ok {
		c.n++
		c.client = clip(client)
		return false
	}
	if len(r.keys) >= r.maxKeys {
		r.other.n++
		r.other.client = clip(client)
		return false
	}
	r.keys[k] = &refusalCount{}
	return true
}

// flush ends the window when it is over: it logs the refusals that were
// counted and not logged, and starts a new one.
func (r *refusalLog) flush(log *slog.Logger, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.start.IsZero() || now.Sub(r.start) < r.window {
		return
	}
	for k, c := range r.keys {
		if c.n > 0 {
			log.Info("refusals not logged", "remote", k.addr, "count", c.n, "reason", k.reason, "lastClient", c.client, "within", r.window)
		}
	}
	if r.other.n > 0 {
		log.Warn("refusals not logged", "remote", "other addresses", "count", r.other.n, "lastClient", r.other.client, "within", r.window,
			"why", "more addresses and reasons than are logged in a window")
	}
	clear(r.keys)
	r.other = refusalCount{}
	r.start = time.Time{}
}

// clip shortens what a client chose (a client id may have 64 KiB) for
// the log.
func clip(s string) string {
	const max = 200
	if len(s) <= max {
		return s
	}
	i := max
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + fmt.Sprintf("... (%d bytes)", len(s))
}

// addrOf is the address a refusal is counted by: the IPv4 address, or
// the /64 of an IPv6 one.
func addrOf(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	if ip = ip.Unmap(); ip.Is4() {
		return ip.String()
	}
	p, _ := ip.Prefix(64)
	return p.String()
}

// serverErrors is the error log of the hub's WebSocket server: a failed
// TLS handshake, which anyone who can connect causes, is a refusal
// (refusalLog); anything else is a WARN, as before.
type serverErrors struct{ h *Hub }

func (w serverErrors) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	if rest, ok := strings.CutPrefix(msg, "http: TLS handshake error from "); ok {
		remote, detail, _ := strings.Cut(rest, ": ")
		if w.h.refusals.note(remote, "", "TLS handshake failed", time.Now()) {
			w.h.log.Info("mqtt connect refused", "remote", remote, "reason", "TLS handshake failed", "detail", detail, "listener", "websocket")
		}
		return len(p), nil
	}
	w.h.log.Warn(msg, "listener", "websocket")
	return len(p), nil
}
