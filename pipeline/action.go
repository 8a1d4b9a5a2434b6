package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"ledge/internal/outage"
)

// Publisher publishes a pipeline's messages into the in-process hub, as
// module outputs (/messages/modules/<pipeline>/outputs/<output>), where
// routes take them on. The appliance provides it when the hub runs.
type Publisher interface {
	Publish(ctx context.Context, pipeline, output string, body []byte, props map[string]string) error
}

// Action defaults.
const (
	DefaultActionRetries = 3
	DefaultActionBackoff = time.Second
	MaxActionBackoff     = 30 * time.Second
	DefaultActionTimeout = 5 * time.Second
	DefaultActionQueue   = 64
)

// action is one kind of actuator.
type action interface {
	// do performs the action for e within ctx. An error wrapped by
	// permanent is not retried.
	do(ctx context.Context, e *Event) error
	close()
}

// permanentError marks a failure a retry cannot fix (a 4xx answer).
type permanentError struct{ error }

func (p permanentError) Unwrap() error { return p.error }

func permanent(err error) error { return permanentError{err} }

// actionRunner runs one action from its own bounded queue, with retries
// and counters. Its queue is closed by the dispatcher; run then finishes
// what is queued unless its context ends first.
type actionRunner struct {
	name  string
	typ   string
	spec  ActionSpec
	act   action
	queue chan *Event
	log   *slog.Logger
	out   *outage.Log // the target's outages: told once, not per event
	lat   *ring       // one successful attempt
	c2a   *ring       // capture to action

	delivered, failed, retries, dropped, limited atomic.Uint64
	lastErr                                      atomic.Pointer[string]
	passed                                       time.Time // last event let through the cooldown (dispatcher only)
}

func newActionRunner(name string, s ActionSpec, act action, c *counters, log *slog.Logger) *actionRunner {
	q := s.Queue
	if q == 0 {
		q = DefaultActionQueue
	}
	r := &actionRunner{name: name, typ: s.Type, spec: s, act: act, queue: make(chan *Event, q),
		log: log.With("action", name), lat: c.lat[StageAction], c2a: c.lat[StageCaptureToAction]}
	r.out = outage.New(r.log, "action", 0)
	return r
}

// wants reports whether the action takes e.
func (r *actionRunner) wants(e *Event) bool {
	return wants(r.spec.on(), r.spec.Zones, r.spec.Classes, e)
}

// enqueue queues e without blocking; a full queue drops it, and one within
// the cooldown of the last is skipped (both counted). It is called by the
// dispatcher only.
func (r *actionRunner) enqueue(e *Event) {
	if cd := r.spec.Cooldown; cd > 0 {
		now := time.Now()
		if !r.passed.IsZero() && now.Sub(r.passed) < cd {
			r.limited.Add(1)
			return
		}
		r.passed = now
	}
	select {
	case r.queue <- e:
	default:
		r.dropped.Add(1)
	}
}

func (r *actionRunner) run(ctx context.Context) {
	for e := range r.queue {
		if ctx.Err() != nil {
			r.dropped.Add(1)
			continue
		}
		r.deliver(ctx, e)
	}
}

// deliver tries e until it succeeds, fails permanently or runs out of
// retries.
func (r *actionRunner) deliver(ctx context.Context, e *Event) bool {
	retries := r.spec.Retries
	if retries == 0 {
		retries = DefaultActionRetries
	}
	if retries < 0 {
		retries = 0
	}
	wait := r.spec.Backoff
	if wait == 0 {
		wait = DefaultActionBackoff
	}
	timeout := r.spec.Timeout
	if timeout == 0 {
		timeout = DefaultActionTimeout
	}
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, timeout)
		t0 := time.Now()
		err := r.act.do(actx, e)
		cancel()
		if err == nil {
			now := time.Now()
			r.lat.add(now.Sub(t0))
			if !e.Captured.IsZero() {
				r.c2a.add(now.Sub(e.Captured))
			}
			r.delivered.Add(1)
			r.out.OK()
			return true
		}
		msg := err.Error()
		r.lastErr.Store(&msg)
		var perm permanentError
		if attempt >= retries || errors.As(err, &perm) || ctx.Err() != nil {
			r.failed.Add(1)
			if ctx.Err() == nil {
				// A WARN when the target starts failing, DEBUG for
				// the events after it, an INFO when one gets through.
				r.out.Fail(msg, "event", e.Type, "attempts", attempt+1)
			}
			return false
		}
		r.retries.Add(1)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			r.failed.Add(1)
			return false
		case <-t.C:
		}
		wait = min(wait*2, MaxActionBackoff)
	}
}

func (r *actionRunner) stats() ActionStats {
	s := ActionStats{Name: r.name, Type: r.typ, Delivered: r.delivered.Load(), Failed: r.failed.Load(),
		Retries: r.retries.Load(), Dropped: r.dropped.Load(), Limited: r.limited.Load()}
	if p := r.lastErr.Load(); p != nil {
		s.LastError = *p
	}
	if failing, since, _ := r.out.State(); failing {
		s.Failing, s.FailingSince = true, since
	}
	return s
}

// eventJSON is the body mqtt, webhook and hub actions send.
func eventJSON(e *Event) ([]byte, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode event: %w", err)
	}
	return b, nil
}

// logAction writes the event to the log.
type logAction struct {
	log   *slog.Logger
	level slog.Level
}

func (a *logAction) do(ctx context.Context, e *Event) error {
	a.log.Log(ctx, a.level, "pipeline event", "type", e.Type, "zone", e.Zone,
		"class", e.Class, "track", e.TrackID, "score", e.Score, "count", e.Count, "frame", e.Frame)
	return nil
}

func (a *logAction) close() {}

// hubAction publishes the event into the in-process hub.
type hubAction struct {
	pub      Publisher
	pipeline string
	output   string
}

func (a *hubAction) do(ctx context.Context, e *Event) error {
	body, err := eventJSON(e)
	if err != nil {
		return permanent(err)
	}
	props := map[string]string{"type": e.Type, "class": e.Class, "zone": e.Zone, "pipeline": e.Pipeline,
		"contentType": "application/json"}
	return a.pub.Publish(ctx, a.pipeline, a.output, body, props)
}

func (a *hubAction) close() {}
