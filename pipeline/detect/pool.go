package detect

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"ledge/inference"
)

// key is what makes two detectors different.
type key struct {
	path     string
	kind     string
	labels   string
	sessions int
	threads  int
	inW, inH int
}

// Pool shares detectors across stages, reference-counted, and opens ONNX
// Runtime only when the first detector is needed (closing it with the
// last). A model loads in a goroutine of its own, outside the pool's
// lock: the stages that want it wait for it, each until its context ends,
// and everything else goes on meanwhile. Safe for concurrent use.
type Pool struct {
	library       string
	providers     []string
	tensorRTCache string // where the TensorRT provider keeps its engines
	// newDetector loads a model; tests replace it to make a load hang or
	// fail on demand.
	newDetector func(rt *inference.Runtime, path string, o inference.Options) (*inference.Detector, error)

	mu      sync.Mutex // guards rt, entries and every entry's refs
	rt      *inference.Runtime
	entries map[key]*entry // loading or loaded

	loads atomic.Uint64  // detectors loaded, ever
	bg    sync.WaitGroup // loads, and releases in the background
}

// entry is one detector, loading or loaded.
type entry struct {
	key   key
	ready chan struct{} // closed when the load ended; det or err is set then
	det   *inference.Detector
	err   error
	refs  int // guarded by Pool.mu
}

// NewPool returns a pool that loads ONNX Runtime from library and runs
// models on providers.
func NewPool(library string, providers []string, tensorRTCache string) *Pool {
	return &Pool{library: library, providers: providers, tensorRTCache: tensorRTCache, entries: map[key]*entry{},
		newDetector: (*inference.Runtime).NewDetector}
}

// acquire returns the shared detector for k, loading it (at low priority
// with low) if nobody holds or loads it; name names the model in errors.
// It waits for the load until ctx ends. Each acquire that succeeds is
// paired with a release.
func (p *Pool) acquire(ctx context.Context, k key, name string, low bool) (*entry, error) {
	p.mu.Lock()
	e, ok := p.entries[k]
	if !ok {
		e = &entry{key: k, ready: make(chan struct{})}
		p.entries[k] = e
		p.bg.Go(func() {
			if low {
				atLowPriority(func() { p.fill(e, name) })
			} else {
				p.fill(e, name)
			}
		})
	}
	e.refs++
	p.mu.Unlock()
	select {
	case <-e.ready:
	case <-ctx.Done():
		p.release(e) // the load goes on; its end closes what nobody wants
		return nil, ctx.Err()
	}
	if e.err != nil {
		p.release(e)
		return nil, e.err
	}
	return e, nil
}

// fill loads e's detector, and closes it at once if every stage that
// wanted it gave up waiting. A failed load leaves the pool, so the next
// acquire tries again.
func (p *Pool) fill(e *entry, name string) {
	det, err := p.open(e.key, name)
	p.mu.Lock()
	defer p.mu.Unlock()
	e.det, e.err = det, err
	close(e.ready)
	switch {
	case err != nil:
		delete(p.entries, e.key)
		p.closeRuntimeIfIdle()
	case e.refs == 0:
		p.loads.Add(1)
		p.drop(e)
	default:
		p.loads.Add(1)
	}
}

// open loads k's model, opening ONNX Runtime first if needed.
func (p *Pool) open(k key, name string) (*inference.Detector, error) {
	p.mu.Lock()
	if p.rt == nil {
		rt, err := inference.Open(p.library)
		if err != nil {
			p.mu.Unlock()
			return nil, err
		}
		p.rt = rt
	}
	rt := p.rt // stays open: k's entry is in the pool until the load ends
	p.mu.Unlock()
	kind, err := inference.ParseKind(k.kind)
	if err != nil {
		return nil, err
	}
	return p.newDetector(rt, k.path, inference.Options{Kind: kind, Labels: k.labelList(), Name: name,
		Sessions: k.sessions, Threads: k.threads, Providers: p.providers, InputWidth: k.inW, InputHeight: k.inH,
		TensorRTCache: p.tensorRTCache})
}

// release drops one reference to e; the last one closes the detector (or,
// while it loads, leaves that to fill), and the last detector closes ONNX
// Runtime.
func (p *Pool) release(e *entry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e.refs--; e.refs > 0 {
		return
	}
	select {
	case <-e.ready:
	default:
		return // still loading
	}
	if e.err == nil {
		p.drop(e)
	}
}

// drop closes e's detector and takes it out of the pool. p.mu is held.
func (p *Pool) drop(e *entry) {
	if p.entries[e.key] == e {
		delete(p.entries, e.key)
	}
	e.det.Close()
	p.closeRuntimeIfIdle()
}

// releaseLater releases e in a goroutine Wait waits for, at low priority:
// it runs right when the frames of the new model start.
func (p *Pool) releaseLater(e *entry) {
	p.bg.Go(func() { atLowPriority(func() { p.release(e) }) })
}

// Wait waits for the loads and releases running in the background.
func (p *Pool) Wait() { p.bg.Wait() }

func (p *Pool) closeRuntimeIfIdle() {
	if len(p.entries) == 0 && p.rt != nil {
		p.rt.Close()
		p.rt = nil
	}
}

// Loads counts the detectors loaded since the pool was made; sharing does
// not add to it.
func (p *Pool) Loads() uint64 { return p.loads.Load() }

// Open is the number of distinct detectors loaded now.
func (p *Pool) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, e := range p.entries {
		select {
		case <-e.ready:
			n++
		default:
		}
	}
	return n
}

// Check loads m, the model name stands for, on its own (one session of
// one thread, at low priority), warms it and releases it: it proves that
// m serves when no stage runs the name yet.
func (p *Pool) Check(ctx context.Context, name string, m Model) error {
	d := Spec{Model: name}
	e, err := p.acquire(ctx, d.key(m, Layout{Sessions: 1, Threads: 1}), d.label(m), true)
	if err != nil {
		return err
	}
	defer p.release(e)
	if err := warm(ctx, e.det); err != nil {
		return fmt.Errorf("model %s does not serve: %w", d.label(m), err)
	}
	return nil
}
