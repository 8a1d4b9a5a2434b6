package pipeline

import (
	"time"

	"ledge/internal/fanout"
	"ledge/pipeline/source"
)

// bus fans events out to subscribers, each with a bounded channel: a
// subscriber that does not keep up loses events (counted), it never slows
// a pipeline. Safe for concurrent use.
type bus struct{ b fanout.Bus[Event] }

// Subscription is a subscriber's handle.
type Subscription struct {
	// C receives events; it is closed by Cancel.
	C <-chan Event
	s *fanout.Sub[Event]
}

// Dropped counts events this subscriber missed because C was full.
func (s *Subscription) Dropped() uint64 { return s.s.Dropped() }

// Cancel ends the subscription and closes C.
func (s *Subscription) Cancel() { s.s.Cancel() }

func (b *bus) subscribe(buf int) *Subscription {
	if buf <= 0 {
		buf = 64
	}
	sub := b.b.Subscribe(buf)
	return &Subscription{C: sub.C, s: sub}
}

func (b *bus) publish(e Event) {
	e.jpeg = nil
	b.b.Publish(e)
}

func (b *bus) publishState(pipeline string, s source.State) {
	b.publish(Event{Type: SourceState, Pipeline: pipeline, Time: time.Now(), Source: &s})
}
