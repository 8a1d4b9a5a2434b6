package appliance

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"ledge/agent"
)

// TestWarnOnceDeployed: the warning that modules cannot reach the hub
// comes with the first agent event after which modules are deployed, and
// once: the events after it say nothing more. (TestModulesCannotReachHubLogged
// checks the line itself, with a real agent and module.)
func TestWarnOnceDeployed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var modules, warned atomic.Int32
		events := make(chan agent.Event) // unbuffered: a send returns once the loop took the event
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			warnOnceDeployed(ctx, events, func() int { return int(modules.Load()) }, func(n int) {
				if n != 2 {
					t.Errorf("warned with %d modules, want 2", n)
				}
				warned.Add(1)
			})
		}()
		events <- agent.Event{Kind: agent.EventPull}
		synctest.Wait()
		if n := warned.Load(); n != 0 {
			t.Fatalf("warned %d times before any module was deployed", n)
		}
		modules.Store(2)
		events <- agent.Event{Kind: agent.EventModule}
		synctest.Wait()
		if n := warned.Load(); n != 1 {
			t.Fatalf("warned %d times once modules were deployed, want 1", n)
		}
		// More events: taken or not, every goroutine is blocked when
		// synctest.Wait returns, and none warned again.
		go func() {
			for range 5 {
				select {
				case events <- agent.Event{Kind: agent.EventModule}:
				case <-ctx.Done():
					return
				}
			}
		}()
		synctest.Wait()
		if n := warned.Load(); n != 1 {
			t.Errorf("warned %d times after more agent events, want once", n)
		}
		cancel()
		<-done
	})
}
