package models

import (
	"ledge/internal/fanout"
	"time"
)

// Event is a change in the store, for the dashboard and the CLI.
type Event struct {
	// Type is EventProgress (bytes arrived) or EventState (a version
	// changed state: queued, downloading, verifying, ready, activating,
	// active, failed, removed).
	Type    string    `json:"type"`
	Time    time.Time `json:"time"`
	Name    string    `json:"name"`
	Version string    `json:"version"`
	State   State     `json:"state,omitempty"`
	// Error says why a version failed.
	Error    string    `json:"error,omitempty"`
	Progress *Progress `json:"progress,omitempty"`
}

// Event types.
const (
	EventProgress = "model.progress"
	EventState    = "model.state"
)

// StateRemoved is the state of an event for a version the store collected.
const StateRemoved State = "removed"

// eventBus fans events out to subscribers; publishing never blocks: a
// subscriber whose buffer is full misses the event (counted). Safe for
// concurrent use.
type eventBus struct{ bus fanout.Bus[Event] }

func (b *eventBus) subscribe(buf int) (<-chan Event, func()) {
	if buf <= 0 {
		buf = 64
	}
	s := b.bus.Subscribe(buf)
	return s.C, s.Cancel
}

func (b *eventBus) publish(ev Event) {
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	b.bus.Publish(ev)
}

func (b *eventBus) dropped() int64 { return int64(b.bus.Dropped()) }
