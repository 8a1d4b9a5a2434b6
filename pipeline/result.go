package pipeline

import (
	"sync"
	"sync/atomic"
	"time"
)

// Result is what a pipeline made of one frame.
type Result struct {
	Pipeline string    `json:"pipeline"`
	Frame    uint64    `json:"frame"` // source frame number, from 1
	Time     time.Time `json:"time"`  // scene time
	// Detected tells whether the detector ran on this frame (false when the
	// motion gate, maxFps or every skipped it).
	Detected bool `json:"detected"`
	// Objects are the detections with their track ids (0 until confirmed).
	Objects []Object `json:"objects,omitempty"`
	// Model is the version of the model that produced Objects.
	Model string `json:"model,omitempty"`
	// Processed is when the pipeline finished the frame (wall clock).
	Processed time.Time `json:"processed"`
}

// resultBus hands per-frame results to subscribers (bounded channels,
// overflow dropped); with no subscriber it costs one atomic load per frame.
// Safe for concurrent use.
type resultBus struct {
	n    atomic.Int32
	mu   sync.Mutex // guards subs
	subs map[chan Result]struct{}
}

func (b *resultBus) subscribe(buf int) (<-chan Result, func()) {
	if buf <= 0 {
		buf = 64
	}
	ch := make(chan Result, buf)
	b.mu.Lock()
	if b.subs == nil {
		b.subs = map[chan Result]struct{}{}
	}
	b.subs[ch] = struct{}{}
	b.n.Add(1)
	b.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			b.mu.Lock()
			delete(b.subs, ch)
			b.n.Add(-1)
			close(ch)
			b.mu.Unlock()
		})
	}
}

func (b *resultBus) publish(r Result) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs {
		select {
		case ch <- r:
		default:
		}
	}
}

// Results subscribes to the per-frame results of the named pipeline, with
// a channel of buf results (a slow reader loses results). It is meant for
// tests, tools and model swaps, not for hot paths. Call cancel when done.
func (e *Engine) Results(name string, buf int) (<-chan Result, func(), error) {
	if _, err := e.Spec(name); err != nil {
		return nil, nil, err
	}
	ch, cancel := e.slotFor(name).results.subscribe(buf)
	return ch, cancel, nil
}
