package mqtt

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// TestNextImmediateWithConcurrentSet: NextImmediate (the client's read
// goroutine, after each acknowledgement) and Set (a publisher queueing for
// the same session) at once never deadlock. NextImmediate took the read
// lock twice (itself, then GetAll): a Set waiting for the write lock in
// between blocked the second, and both waited for good (a resumed session
// then stopped receiving after a hundred messages).
func TestNextImmediateWithConcurrentSet(t *testing.T) {
	i := NewInflights()
	for id := uint16(1); id <= 100; id++ {
		i.Set(packets.Packet{PacketID: id, Expiry: -1})
	}
	var stop atomic.Bool
	setter, reader := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(setter)
		for n := 0; n < 100000 && !stop.Load(); n++ {
			i.Set(packets.Packet{PacketID: uint16(200 + n%1000), Expiry: -1})
		}
	}()
	go func() {
		defer close(reader)
		for !stop.Load() {
			if pk, ok := i.NextImmediate(); !ok || pk.PacketID != 1 {
				t.Errorf("NextImmediate = %d, %v: want the first set, 1", pk.PacketID, ok)
				return
			}
		}
	}()
	select {
	case <-setter:
		stop.Store(true)
		<-reader
	case <-time.After(30 * time.Second):
		stop.Store(true)
		t.Fatal("NextImmediate and Set deadlocked")
	}
}
