// Package fanout delivers values to every subscriber without ever
// blocking the publisher: each subscriber has a bounded channel, and a
// subscriber that does not keep up misses values, counted per subscriber
// and in total. Components use it for their event feeds (agent, models,
// pipelines, the dashboard).
//
// A Bus is safe for concurrent use; its zero value is ready.
package fanout

import (
	"sync"
	"sync/atomic"
)

// Bus fans values of type T out to subscribers.
type Bus[T any] struct {
	mu      sync.Mutex // guards subs
	subs    map[*Sub[T]]struct{}
	n       atomic.Int32 // len(subs), read without the lock
	dropped atomic.Uint64
}

// Sub is one subscription.
type Sub[T any] struct {
	// C receives values; it is closed by Cancel.
	C       <-chan T
	ch      chan T
	bus     *Bus[T]
	dropped atomic.Uint64
}

// Subscribe returns a subscription whose channel holds at most buf values
// (at least 1).
func (b *Bus[T]) Subscribe(buf int) *Sub[T] {
	ch := make(chan T, max(buf, 1))
	s := &Sub[T]{C: ch, ch: ch, bus: b}
	b.mu.Lock()
	if b.subs == nil {
		b.subs = map[*Sub[T]]struct{}{}
	}
	b.subs[s] = struct{}{}
	b.n.Add(1)
	b.mu.Unlock()
	return s
}

// Publish offers v to every subscriber that has room.
func (b *Bus[T]) Publish(v T) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		select {
		case s.ch <- v:
		default:
			s.dropped.Add(1)
			b.dropped.Add(1)
		}
	}
}

// Dropped counts the values any subscriber missed.
func (b *Bus[T]) Dropped() uint64 { return b.dropped.Load() }

// Len is the number of open subscriptions. It takes no lock: a publisher
// on a hot path may call it for every value, to skip building one that
// nobody would receive.
func (b *Bus[T]) Len() int { return int(b.n.Load()) }

// Dropped counts the values this subscriber missed because C was full.
func (s *Sub[T]) Dropped() uint64 { return s.dropped.Load() }

// Cancel ends the subscription and closes C; calling it again is a no-op.
func (s *Sub[T]) Cancel() {
	s.bus.mu.Lock()
	defer s.bus.mu.Unlock()
	if _, ok := s.bus.subs[s]; ok {
		delete(s.bus.subs, s)
		s.bus.n.Add(-1)
		close(s.ch)
	}
}
