package pipeline

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"gocv.io/x/gocv"

	"ledge/pipeline/source"
)

// mailbox is the edge between capture and process: it holds at most one
// frame. For a live source a new frame replaces one not yet taken (the
// older one is dropped and counted): latest wins, so a slow detector never
// builds a queue. For a lossless source (a file read as fast as it is
// consumed) Put waits until the frame is taken. Safe for concurrent use.
type mailbox struct {
	lossless bool
	dropped  *atomic.Uint64
	ready    chan struct{} // signalled when a frame arrives
	space    chan struct{} // signalled when the frame is taken

	mu     sync.Mutex // guards frame and closed
	frame  *source.Frame
	closed bool
}

func newMailbox(lossless bool, dropped *atomic.Uint64) *mailbox {
	return &mailbox{lossless: lossless, dropped: dropped, ready: make(chan struct{}, 1), space: make(chan struct{}, 1)}
}

// put stores f. It returns false, keeping ownership of f with the caller,
// when ctx ends or the mailbox is closed. A replaced frame's Mat is handed
// to recycle.
func (m *mailbox) put(ctx context.Context, f source.Frame, recycle func(gocv.Mat)) bool {
	for {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return false
		}
		if m.frame == nil || !m.lossless {
			if m.frame != nil {
				recycle(m.frame.Mat)
				m.dropped.Add(1)
			}
			m.frame = &f
			m.mu.Unlock()
			select {
			case m.ready <- struct{}{}:
			default:
			}
			return true
		}
		m.mu.Unlock()
		select {
		case <-ctx.Done():
			return false
		case <-m.space:
		}
	}
}

// take waits for a frame; false when ctx ends.
func (m *mailbox) take(ctx context.Context) (source.Frame, bool) {
	for ctx.Err() == nil {
		m.mu.Lock()
		if f := m.frame; f != nil {
			m.frame = nil
			m.mu.Unlock()
			select {
			case m.space <- struct{}{}:
			default:
			}
			return *f, true
		}
		m.mu.Unlock()
		select {
		case <-ctx.Done():
			return source.Frame{}, false
		case <-m.ready:
		}
	}
	return source.Frame{}, false
}

// close refuses further frames and returns a pending one's Mat to recycle.
func (m *mailbox) close(recycle func(gocv.Mat)) {
	m.mu.Lock()
	m.closed = true
	f := m.frame
	m.frame = nil
	m.mu.Unlock()
	if f != nil {
		recycle(f.Mat)
	}
	select {
	case m.space <- struct{}{}: // wake a waiting put, which sees closed
	default:
	}
}

// capture runs a source into the current mailbox. The mailbox can be
// switched, so a reloaded pipeline whose source did not change keeps the
// camera open. Its Mats come from a small pool.
type capture struct {
	spec    source.Spec
	mb      atomic.Pointer[mailbox]
	pool    chan gocv.Mat
	state   source.Watch
	onState atomic.Pointer[func(source.State)]
	cancel  context.CancelFunc
	done    chan struct{}
	counted atomic.Pointer[func(source.Frame)] // counts a frame taken by a mailbox
}

func newCapture(spec source.Spec) *capture {
	c := &capture{spec: spec, pool: make(chan gocv.Mat, 4), done: make(chan struct{})}
	c.state.Set(source.State{Phase: source.PhaseConnecting, Since: time.Now()}) // until Run says more: starting, not "stopped"
	return c
}

// start runs the source until stop.
func (c *capture) start(ctx context.Context) {
	ctx, c.cancel = context.WithCancel(ctx)
	go func() {
		defer close(c.done)
		source.Run(ctx, c.spec, c, func(s source.State) {
			c.state.Set(s)
			if f := c.onState.Load(); f != nil {
				(*f)(s)
			}
		})
	}()
}

// stop ends the source and waits for it.
func (c *capture) stop() {
	if c.cancel != nil {
		c.cancel()
		<-c.done
	}
	for {
		select {
		case m := <-c.pool:
			m.Close()
		default:
			return
		}
	}
}

// Mat implements source.Sink.
func (c *capture) Mat() gocv.Mat {
	select {
	case m := <-c.pool:
		return m
	default:
		return gocv.NewMat()
	}
}

// Recycle implements source.Sink; the process stage also returns Mats here.
func (c *capture) Recycle(m gocv.Mat) {
	select {
	case c.pool <- m:
	default:
		m.Close()
	}
}

// Put implements source.Sink: into the current mailbox, or the next one
// when the current was closed by a swap.
func (c *capture) Put(ctx context.Context, f source.Frame) bool {
	for ctx.Err() == nil {
		mb := c.mb.Load()
		if mb == nil {
			return false
		}
		if mb.put(ctx, f, c.Recycle) {
			if f2 := c.counted.Load(); f2 != nil {
				(*f2)(f)
			}
			return true
		}
		if c.mb.Load() == mb {
			return false // closed, and no new mailbox: stopping
		}
	}
	return false
}
