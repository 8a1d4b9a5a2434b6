package pipeline

import (
	"sync"
	"sync/atomic"
	"time"

	"gocv.io/x/gocv"
)

// JPEG is one annotated frame for viewers.
type JPEG struct {
	Data  []byte
	Frame uint64
	Time  time.Time
}

// watchJob is a frame waiting to be annotated and encoded. The Mat is a
// clone owned by the job; the encoder closes it.
type watchJob struct {
	mat   gocv.Mat
	objs  []Object
	zones []zone
	text  string
	frame uint64
	at    time.Time
}

// frameHub hands a pipeline's annotated frames to viewers. Frames are
// cloned, annotated and encoded only while somebody watches, at most
// maxFPS a second, by an encoder goroutine that runs only while there are
// viewers; each viewer has a one-frame channel where the newest frame
// wins. It outlives pipeline reloads (one per pipeline name). Safe for
// concurrent use.
type frameHub struct {
	maxFPS  float64
	encodes *atomic.Uint64
	n       atomic.Int32 // viewers

	mu      sync.Mutex // guards the fields below
	viewers map[chan JPEG]struct{}
	job     *watchJob     // pending, latest wins
	wake    chan struct{} // to the encoder
	running bool          // encoder goroutine alive
	latest  JPEG
	offered time.Time
}

func newFrameHub(maxFPS float64, encodes *atomic.Uint64) *frameHub {
	return &frameHub{maxFPS: maxFPS, encodes: encodes, viewers: map[chan JPEG]struct{}{}, wake: make(chan struct{}, 1)}
}

// watching reports whether a frame should be offered now.
func (h *frameHub) watching(now time.Time) bool {
	if h.n.Load() == 0 {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.maxFPS > 0 && now.Sub(h.offered) < time.Duration(float64(time.Second)/h.maxFPS) {
		return false
	}
	h.offered = now
	return true
}

// offer queues a job (taking ownership of its Mat), replacing one the
// encoder has not started.
func (h *frameHub) offer(j *watchJob) {
	h.mu.Lock()
	if !h.running {
		h.mu.Unlock()
		j.mat.Close()
		return
	}
	old := h.job
	h.job = j
	h.mu.Unlock()
	if old != nil {
		old.mat.Close()
	}
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// watch adds a viewer and returns its channel and a cancel function.
func (h *frameHub) watch() (<-chan JPEG, func()) {
	ch := make(chan JPEG, 1)
	h.mu.Lock()
	h.viewers[ch] = struct{}{}
	h.n.Add(1)
	if !h.running {
		h.running = true
		go h.encoder()
	}
	h.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			h.mu.Lock()
			delete(h.viewers, ch)
			h.n.Add(-1)
			h.mu.Unlock()
			select {
			case h.wake <- struct{}{}:
			default:
			}
		})
	}
}

// encoder annotates and encodes jobs until the last viewer leaves.
func (h *frameHub) encoder() {
	for range h.wake {
		h.mu.Lock()
		if len(h.viewers) == 0 {
			h.running = false
			j := h.job
			h.job = nil
			h.mu.Unlock()
			if j != nil {
				j.mat.Close()
			}
			return
		}
		j := h.job
		h.job = nil
		h.mu.Unlock()
		if j == nil {
			continue
		}
		annotate(&j.mat, j.objs, j.zones, j.text)
		data, err := encodeJPEG(j.mat, 80)
		j.mat.Close()
		if err != nil {
			continue
		}
		h.encodes.Add(1)
		f := JPEG{Data: data, Frame: j.frame, Time: j.at}
		h.mu.Lock()
		h.latest = f
		for ch := range h.viewers {
			select {
			case <-ch: // drop the older frame: latest wins
			default:
			}
			select {
			case ch <- f:
			default:
			}
		}
		h.mu.Unlock()
	}
}

// last returns the newest encoded frame (zero when none yet).
func (h *frameHub) last() JPEG {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.latest
}
