package web

import "ledge/internal/fanout"

// Broadcaster is an EventFeed that fans events out to every subscriber.
// Publish never blocks: a subscriber whose buffer is full misses the event,
// and the miss is counted for it. Safe for concurrent use.
type Broadcaster struct{ bus fanout.Bus[Event] }

// NewBroadcaster returns an empty broadcaster.
func NewBroadcaster() *Broadcaster { return &Broadcaster{} }

// Publish sends ev to every subscriber that has room.
func (b *Broadcaster) Publish(ev Event) { b.bus.Publish(ev) }

// Subscribe implements EventFeed.
func (b *Broadcaster) Subscribe(buffer int) (<-chan Event, func() uint64, func()) {
	s := b.bus.Subscribe(buffer)
	return s.C, s.Dropped, s.Cancel
}

// Subscribers is the number of open subscriptions.
func (b *Broadcaster) Subscribers() int { return b.bus.Len() }
