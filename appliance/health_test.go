package appliance

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// A component that fails is told once at WARN, its recovery at INFO; a
// component that logs its own failures is not repeated.
func TestHealthWatchTellsFailureOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
		var broken atomic.Bool
		broken.Store(true)
		h := newHealthSet()
		h.add("hub", func(context.Context) error {
			if broken.Load() {
				return errors.New("store-and-forward cannot commit: disk full")
			}
			return nil
		})
		h.addSelfLogged("agent", func(context.Context) error { return errors.New("docker engine unreachable") })
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- h.watch(ctx, log) }()
		time.Sleep(5 * healthEvery)
		synctest.Wait()
		broken.Store(false)
		time.Sleep(2 * healthEvery)
		synctest.Wait()
		cancel()
		<-done
		out := buf.String()
		if strings.Count(out, "level=WARN") != 1 || !strings.Contains(out, `msg="hub failing"`) || !strings.Contains(out, "disk full") {
			t.Errorf("want one WARN for the hub:\n%s", out)
		}
		if strings.Count(out, "level=INFO") != 1 || !strings.Contains(out, `msg="hub recovered"`) {
			t.Errorf("want one INFO on recovery:\n%s", out)
		}
		if strings.Contains(out, "agent") {
			t.Errorf("the agent's own failures were repeated:\n%s", out)
		}
	})
}
