package web

import (
	"sync"
	"sync/atomic"
)

// Broadcaster is an EventFeed that fans events out to every subscriber.
// Publish never blocks: a subscriber whose buffer is full misses the event,
// and the miss is counted for it. Safe for concurrent use.
type Broadcaster struct {
	mu   sync.Mutex // guards subs
	subs map[*subscriber]struct{}
}

type subscriber struct {
	ch      chan Event
	dropped atomic.Uint64
}

// NewBroadcaster returns an empty broadcaster.
func NewBroadcaster() *Broadcaster {
	return &Broadcaster{subs: map[*subscriber]struct{}{}}
}

// Publish sends ev to every subscriber that has room.
func (b *Broadcaster) Publish(ev Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		select {
		case s.ch <- ev:
		default:
			s.dropped.Add(1)
		}
	}
}

// Subscribe implements EventFeed.
func (b *Broadcaster) Subscribe(buffer int) (<-chan Event, func() uint64, func()) {
	s := &subscriber{ch: make(chan Event, max(buffer, 1))}
	b.mu.Lock()
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	var once sync.Once
	cancel := func() {
		once.Do(func() {
			b.mu.Lock()
			delete(b.subs, s)
			b.mu.Unlock()
			close(s.ch)
		})
	}
	return s.ch, s.dropped.Load, cancel
}

// Subscribers is the number of open subscriptions.
func (b *Broadcaster) Subscribers() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}
