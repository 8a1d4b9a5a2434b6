package listeners

import (
	"sync"
	"testing"
)

// TestAddClientDuringCloseAll: clients accepted while CloseAll waits are
// refused, not added to the WaitGroup it waits on (a race the detector
// reported in ledge's hub tests: a connection accepted as the hub
// stopped); those added before are waited for.
func TestAddClientDuringCloseAll(t *testing.T) {
	l := New()
	if !l.AddClient() {
		t.Fatal("AddClient refused before CloseAll")
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 200; j++ {
				if l.AddClient() {
					l.ClientsWg.Done()
				}
			}
		}()
	}
	closed := make(chan struct{})
	go func() { l.CloseAll(MockCloser); close(closed) }()
	select {
	case <-closed:
		t.Fatal("CloseAll returned while a client it counted was still open")
	default:
	}
	l.ClientsWg.Done() // the first client ends
	<-closed
	wg.Wait()
	if l.AddClient() {
		t.Error("AddClient accepted a client after CloseAll")
	}
}
