package source

import (
	"context"
	"errors"
	"sync"
	"time"

	"gocv.io/x/gocv"
)

// Phase is where a source is in its life.
type Phase string

// The phases of a source.
const (
	PhaseConnecting Phase = "connecting"
	PhaseStreaming  Phase = "streaming"
	PhaseBackoff    Phase = "backoff"
	PhaseEnded      Phase = "ended"
	PhaseStopped    Phase = "stopped"
)

// State is what a source is doing, for status pages and tests.
type State struct {
	Phase Phase     `json:"phase"`
	Since time.Time `json:"since,omitzero"`
	// Reason is the last failure (set in backoff, kept while reconnecting).
	Reason string `json:"reason,omitempty"`
	// Retry is when the next attempt is due (backoff only).
	Retry time.Time `json:"retry,omitzero"`
	// Failures counts consecutive failures; Reconnects all reopenings.
	Failures   int `json:"failures"`
	Reconnects int `json:"reconnects"`
}

// Frame is one captured frame.
type Frame struct {
	Mat gocv.Mat // owned by whoever holds the Frame
	// Time is the scene time: media time for a file, wall clock for live.
	Time time.Time
	// Captured is the wall-clock time the frame was read.
	Captured time.Time
	// Seq counts frames read from this source, from 1.
	Seq uint64
	// Took is how long reading and decoding the frame took, without the
	// time spent waiting for it (Waited). It is 0 when the source cannot
	// tell the two apart (Wait is WaitBlocking).
	Took time.Duration
	// Waited is how long the source waited for the frame (see Wait).
	Waited time.Duration
	// Wait says what Waited covers.
	Wait WaitKind
}

// WaitKind says what Frame.Waited covers.
type WaitKind uint8

// The kinds of wait.
const (
	// WaitNone: the source does not wait (a file or image set read as fast
	// as it goes, a registered reader): Took is the whole read.
	WaitNone WaitKind = iota
	// WaitPaced: the source waited for its pace; Took is the work alone.
	WaitPaced
	// WaitBlocking: a camera or stream; the read blocked until the next
	// frame came and decoded it, so Waited is the whole read (the frame
	// interval, or the read and decode when slower than that).
	WaitBlocking
)

// Sink takes frames from Run.
type Sink interface {
	// Mat returns a Mat to read the next frame into (possibly recycled).
	Mat() gocv.Mat
	// Recycle takes back a Mat that was not handed over.
	Recycle(m gocv.Mat)
	// Put hands a frame over. It returns false when ctx ended and the
	// frame was not taken (the caller then recycles it).
	Put(ctx context.Context, f Frame) bool
}

// Run reads the source described by s into sink until ctx ends, reopening
// it with back-off after failures; state receives each change of State. It
// returns when ctx ends, or nil when a finite source ended.
func Run(ctx context.Context, s Spec, sink Sink, state func(State)) error {
	t, err := s.Parse()
	if err != nil {
		return err
	}
	initial, maxWait := s.Backoff.Initial, s.Backoff.Max
	if initial <= 0 {
		initial = DefaultBackoffInitial
	}
	if maxWait <= 0 {
		maxWait = max(DefaultBackoffMax, initial)
	}
	st := State{Phase: PhaseConnecting, Since: time.Now()}
	set := func(p Phase, reason string) {
		st.Phase, st.Since, st.Reason = p, time.Now(), reason
		if p != PhaseBackoff {
			st.Retry = time.Time{}
		}
		state(st)
	}
	defer func() {
		if st.Phase != PhaseEnded {
			set(PhaseStopped, st.Reason)
		}
	}()
	var seq uint64
	wait := initial
	opened := false
	for ctx.Err() == nil {
		if opened {
			st.Reconnects++
		}
		set(PhaseConnecting, st.Reason)
		r, err := open(ctx, s, t)
		opened = true
		if err == nil {
			err = pump(ctx, r, sink, &seq, func() { st.Failures = 0; wait = initial; set(PhaseStreaming, "") })
			r.Close()
			if errors.Is(err, ErrEnd) {
				if t.Finite(s) {
					set(PhaseEnded, "")
					return nil
				}
				err = errors.New("stream ended")
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		st.Failures++
		st.Retry = time.Now().Add(wait)
		set(PhaseBackoff, err.Error())
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
		wait = min(wait*2, maxWait)
	}
	return ctx.Err()
}

// pump reads frames until an error; streaming is called after the first.
func pump(ctx context.Context, r Reader, sink Sink, seq *uint64, streaming func()) error {
	n := 0
	for {
		// A reader that never blocks (behind its pace, or unpaced) would
		// otherwise read on after ctx ended.
		if err := ctx.Err(); err != nil {
			return err
		}
		m := sink.Mat()
		t0 := time.Now()
		at, err := r.Read(ctx, &m)
		if err != nil {
			sink.Recycle(m)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		if n == 0 {
			streaming()
		}
		n++
		*seq++
		f := Frame{Mat: m, Time: at, Captured: time.Now(), Seq: *seq}
		f.Took = f.Captured.Sub(t0)
		if w, ok := r.(Waiter); ok {
			d, all := w.Waited()
			if all {
				f.Wait, f.Waited, f.Took = WaitBlocking, f.Took, 0
			} else {
				f.Wait, f.Waited = WaitPaced, min(d, f.Took)
				f.Took -= f.Waited
			}
		}
		if !sink.Put(ctx, f) {
			sink.Recycle(m)
			return ctx.Err()
		}
	}
}

// Watch is a State holder safe for concurrent use, for Run's state
// callback.
type Watch struct {
	mu sync.Mutex // guards st
	st State
}

// Set records s.
func (w *Watch) Set(s State) { w.mu.Lock(); w.st = s; w.mu.Unlock() }

// Get returns the last state.
func (w *Watch) Get() State { w.mu.Lock(); defer w.mu.Unlock(); return w.st }
