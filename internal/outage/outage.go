// Package outage tells the log about a part that fails, once: a WARN when
// it starts failing, an INFO when it recovers (with how long it was down),
// and DEBUG for the attempts in between. WARNs are rate-limited per part,
// so a flapping camera or engine does not flood the log: an outage that
// starts within Every of the last WARN is logged at DEBUG, and so is its
// recovery. A change of reason during a long outage is worth a new WARN,
// under the same limit.
//
// A Log is safe for concurrent use.
package outage

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// DefaultEvery is the default minimum time between two WARNs of one part.
const DefaultEvery = time.Minute

// Log follows one part (a camera, a component).
type Log struct {
	log   *slog.Logger
	what  string // names the part in messages, e.g. "pipeline source"
	every time.Duration

	mu       sync.Mutex // guards the fields below
	failing  bool
	since    time.Time
	reason   string
	count    int // failures in this outage
	warned   bool
	lastWarn time.Time
}

// New returns a Log whose messages read "<what> failing" and "<what>
// recovered", with the attributes of log. every <= 0 means DefaultEvery.
func New(log *slog.Logger, what string, every time.Duration) *Log {
	if every <= 0 {
		every = DefaultEvery
	}
	return &Log{log: log, what: what, every: every}
}

// Fail records a failure with its reason; attrs are added to a logged line.
func (l *Log) Fail(reason string, attrs ...any) {
	l.mu.Lock()
	now := time.Now()
	level, msg := slog.LevelDebug, l.what+" failing"
	switch {
	case !l.failing:
		l.failing, l.since, l.count, l.warned = true, now, 0, false
		if l.lastWarn.IsZero() || now.Sub(l.lastWarn) >= l.every {
			level, l.warned, l.lastWarn = slog.LevelWarn, true, now
		}
	case reason != l.reason && now.Sub(l.lastWarn) >= l.every:
		level, msg, l.warned, l.lastWarn = slog.LevelWarn, l.what+" still failing", true, now
	}
	l.reason = reason
	l.count++
	count, since := l.count, l.since
	l.mu.Unlock()
	args := append([]any{"reason", reason}, attrs...)
	if count > 1 {
		args = append(args, "failures", count, "since", since.Format(time.TimeOnly))
	}
	l.log.Log(context.Background(), level, msg, args...)
}

// OK records that the part works; the first OK after failures ends the
// outage.
func (l *Log) OK(attrs ...any) {
	l.mu.Lock()
	if !l.failing {
		l.mu.Unlock()
		return
	}
	l.failing = false
	level := slog.LevelDebug
	if l.warned {
		level = slog.LevelInfo
	}
	down, count := time.Since(l.since), l.count
	l.mu.Unlock()
	args := append([]any{"down", down.Round(time.Millisecond), "failures", count}, attrs...)
	l.log.Log(context.Background(), level, l.what+" recovered", args...)
}

// Forget ends an outage without a word: the part was stopped or removed,
// not repaired. Its next failure is a new outage.
func (l *Log) Forget() {
	l.mu.Lock()
	l.failing = false
	l.mu.Unlock()
}

// State says whether the part is failing, since when and why.
func (l *Log) State() (failing bool, since time.Time, reason string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failing, l.since, l.reason
}
