package agent

import (
	"ledge/internal/fanout"
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
type broadcaster struct{ bus fanout.Bus[Event] }

func newBroadcaster() *broadcaster { return &broadcaster{} }

func (b *broadcaster) publish(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	b.bus.Publish(e)
}

func (b *broadcaster) subscribe(buf int) (<-chan Event, func()) {
	s := b.bus.Subscribe(buf)
	return s.C, s.Cancel
}

func (b *broadcaster) dropped() int64 { return int64(b.bus.Dropped()) }
