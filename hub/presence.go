package hub

import (
	"strings"
	"sync"
	"time"
)

// Presence is whether an identity has a client connected, and since when.
type Presence struct {
	Connected bool `json:"connected"`
	// Since is when its first client connected (Connected), or when its
	// last client went away; when it has not connected since the hub
	// started, the hub's start (Seen false).
	Since time.Time `json:"since"`
	Seen  bool      `json:"seen"`
}

// presences tracks when each identity connects and goes away. Safe for
// concurrent use.
type presences struct {
	start time.Time
	mu    sync.Mutex // guards m
	m     map[string]*presence
}

type presence struct {
	n     int // live sessions
	since time.Time
}

func newPresences() *presences {
	return &presences{start: time.Now(), m: map[string]*presence{}}
}

func (p *presences) connect(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.m[strings.ToLower(name)]
	if e == nil {
		e = &presence{}
		p.m[strings.ToLower(name)] = e
	}
	if e.n == 0 {
		e.since = time.Now()
	}
	e.n++
}

func (p *presences) disconnect(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e := p.m[strings.ToLower(name)]; e != nil && e.n > 0 {
		e.n--
		if e.n == 0 {
			e.since = time.Now()
		}
	}
}

func (p *presences) get(name string) Presence {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.m[strings.ToLower(name)]
	if e == nil {
		return Presence{Since: p.start}
	}
	return Presence{Connected: e.n > 0, Since: e.since, Seen: true}
}

// Presence says whether identity (a device id, or "<device>/<module>" for
// a module) has a client connected now, and since when it has or has not.
func (h *Hub) Presence(identity string) Presence { return h.presence.get(identity) }
