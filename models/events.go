package models

import (
	"sync"
	"sync/atomic"
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
type eventBus struct {
	mu      sync.Mutex // guards subs
	subs    map[chan Event]struct{}
	dropped atomic.Int64
}

func (b *eventBus) subscribe(buf int) (<-chan Event, func()) {
	if buf <= 0 {
		buf = 64
	}
	ch := make(chan Event, buf)
	b.mu.Lock()
	if b.subs == nil {
		b.subs = map[chan Event]struct{}{}
	}
	b.subs[ch] = struct{}{}
	b.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			b.mu.Lock()
			delete(b.subs, ch)
			close(ch)
			b.mu.Unlock()
		})
	}
}

func (b *eventBus) publish(ev Event) {
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs {
		select {
		case ch <- ev:
		default:
			b.dropped.Add(1)
		}
	}
}
