package fanout

import (
	"sync"
	"testing"
)

func TestBus(t *testing.T) {
	var b Bus[int]
	slow, fast := b.Subscribe(2), b.Subscribe(100)
	for i := range 10 {
		b.Publish(i)
	}
	if len(slow.C) != 2 || slow.Dropped() != 8 || len(fast.C) != 10 || fast.Dropped() != 0 || b.Dropped() != 8 {
		t.Fatalf("slow %d/%d fast %d/%d total %d", len(slow.C), slow.Dropped(), len(fast.C), fast.Dropped(), b.Dropped())
	}
	if got := <-fast.C; got != 0 {
		t.Errorf("first value %d", got)
	}
	slow.Cancel()
	slow.Cancel()
	if b.Len() != 1 {
		t.Errorf("%d subscribers after cancel", b.Len())
	}
	for range slow.C { // closed: drains and ends
	}
	b.Publish(99) // no panic on a cancelled subscriber
	fast.Cancel()
	if b.Len() != 0 {
		t.Errorf("%d subscribers after both cancelled", b.Len())
	}
}

func TestBusConcurrent(t *testing.T) {
	var b Bus[int]
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for i := range 1000 {
				s := b.Subscribe(1)
				b.Publish(i)
				s.Cancel()
			}
		})
	}
	wg.Wait()
	if b.Len() != 0 {
		t.Errorf("%d subscribers left", b.Len())
	}
}
