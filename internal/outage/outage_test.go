package outage

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func lines(b *bytes.Buffer) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	b.Reset()
	return out
}

func TestWarnOnceInfoOnRecovery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf bytes.Buffer
		l := New(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})), "camera", time.Minute)
		l.OK() // never failed: nothing
		for range 5 {
			l.Fail("connection refused", "pipeline", "gate")
			time.Sleep(time.Second)
		}
		got := lines(&buf)
		if len(got) != 1 || !strings.Contains(got[0], "level=WARN") || !strings.Contains(got[0], `msg="camera failing"`) ||
			!strings.Contains(got[0], `reason="connection refused"`) || !strings.Contains(got[0], "pipeline=gate") {
			t.Fatalf("five failures: %q, want one WARN", got)
		}
		if f, _, r := l.State(); !f || r != "connection refused" {
			t.Errorf("state %v %q", f, r)
		}
		l.OK()
		l.OK()
		got = lines(&buf)
		if len(got) != 1 || !strings.Contains(got[0], "level=INFO") || !strings.Contains(got[0], `msg="camera recovered"`) ||
			!strings.Contains(got[0], "down=5s") || !strings.Contains(got[0], "failures=5") {
			t.Fatalf("recovery: %q, want one INFO with the downtime", got)
		}

		// Flapping within the minute: quiet at INFO, both ways.
		time.Sleep(10 * time.Second)
		l.Fail("connection refused")
		l.OK()
		if got := lines(&buf); len(got) != 0 {
			t.Fatalf("a flap within the limit logged %q", got)
		}
		// A minute after the last WARN, a new outage is told again.
		time.Sleep(time.Minute)
		l.Fail("no route to host")
		if got := lines(&buf); len(got) != 1 || !strings.Contains(got[0], "level=WARN") {
			t.Fatalf("new outage after the limit: %q", got)
		}
		// A new reason during a long outage: one more WARN, rate-limited.
		l.Fail("no route to host")
		time.Sleep(2 * time.Minute)
		l.Fail("401 unauthorized")
		l.Fail("403 forbidden")
		got = lines(&buf)
		if len(got) != 1 || !strings.Contains(got[0], `msg="camera still failing"`) || !strings.Contains(got[0], "401") {
			t.Fatalf("changed reason: %q", got)
		}
	})
}
