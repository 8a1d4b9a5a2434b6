package pipeline

import (
	"sync"
	"sync/atomic"
	"time"

	"ledge/pipeline/source"
)

// bus fans events out to subscribers, each with a bounded channel: a
// subscriber that does not keep up loses events (counted), it never slows
// a pipeline. Safe for concurrent use.
type bus struct {
	mu   sync.Mutex // guards subs
	subs map[*subscriber]struct{}
}

type subscriber struct {
	ch      chan Event
	dropped atomic.Uint64
}

// Subscription is a subscriber's handle.
type Subscription struct {
	// C receives events; it is closed by Cancel.
	C   <-chan Event
	s   *subscriber
	bus *bus
}

// Dropped counts events this subscriber missed because C was full.
func (s *Subscription) Dropped() uint64 { return s.s.dropped.Load() }

// Cancel ends the subscription and closes C.
func (s *Subscription) Cancel() {
	s.bus.mu.Lock()
	defer s.bus.mu.Unlock()
	if _, ok := s.bus.subs[s.s]; ok {
		delete(s.bus.subs, s.s)
		close(s.s.ch)
	}
}

func (b *bus) subscribe(buf int) *Subscription {
	if buf <= 0 {
		buf = 64
	}
	s := &subscriber{ch: make(chan Event, buf)}
	b.mu.Lock()
	if b.subs == nil {
		b.subs = map[*subscriber]struct{}{}
	}
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	return &Subscription{C: s.ch, s: s, bus: b}
}

func (b *bus) publish(e Event) {
	e.jpeg = nil
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		select {
		case s.ch <- e:
		default:
			s.dropped.Add(1)
		}
	}
}

func (b *bus) publishState(pipeline string, s source.State) {
	b.publish(Event{Type: SourceState, Pipeline: pipeline, Time: time.Now(), Source: &s})
}
