package agent

import (
	"sync"
	"sync/atomic"
	"time"
)

// Event is something the dashboard and CLI show as it happens: a pull's
// progress, a module's status, a deployment's state.
type Event struct {
	Time time.Time `json:"time"`
	Kind string    `json:"kind"` // EventPull, EventModule, EventDeployment, EventRejected
	// Module events.
	Module        string    `json:"module,omitempty"`
	RuntimeStatus string    `json:"runtimeStatus,omitempty"`
	ExitCode      int       `json:"exitCode,omitempty"`
	RestartCount  int       `json:"restartCount,omitempty"`
	NextRestart   time.Time `json:"nextRestart,omitzero"`
	// BackoffSeconds is the wait before the next restart (status backoff).
	BackoffSeconds float64 `json:"backoffSeconds,omitempty"`
	Description    string  `json:"description,omitempty"`
	// Pull events.
	Pull *PullProgress `json:"pull,omitempty"`
	// Deployment events.
	Deployment int64  `json:"deployment,omitempty"`
	Version    string `json:"version,omitempty"`
	State      string `json:"state,omitempty"`
	Reason     string `json:"reason,omitempty"`
}

// Event kinds.
const (
	EventPull       = "pull"
	EventModule     = "module"
	EventDeployment = "deployment"
	EventRejected   = "rejected"
)

// broadcaster fans events out to subscribers; a subscriber that does not
// keep up loses events (counted), it never slows the agent. Safe for
// concurrent use.
type broadcaster struct {
	mu      sync.Mutex // guards subs
	subs    map[chan Event]struct{}
	dropped atomic.Int64
}

func newBroadcaster() *broadcaster { return &broadcaster{subs: map[chan Event]struct{}{}} }

func (b *broadcaster) publish(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for c := range b.subs {
		select {
		case c <- e:
		default:
			b.dropped.Add(1)
		}
	}
}

func (b *broadcaster) subscribe(buf int) (<-chan Event, func()) {
	c := make(chan Event, buf)
	b.mu.Lock()
	b.subs[c] = struct{}{}
	b.mu.Unlock()
	var once sync.Once
	return c, func() {
		once.Do(func() {
			b.mu.Lock()
			delete(b.subs, c)
			b.mu.Unlock()
		})
	}
}
