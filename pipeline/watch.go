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
// maxFPS a second and only as often as the most demanding viewer asks, by
// an encoder goroutine that runs only while there are viewers; each viewer
// has a one-frame channel where the newest frame wins, and its own rate (a
// grid of small tiles asks for fewer frames than the camera shown large).
// It outlives pipeline reloads (one per pipeline name). Safe for
// concurrent use.
type frameHub struct {
	maxFPS  float64
	encodes *atomic.Uint64
	n       atomic.Int32 // viewers

	mu      sync.Mutex // guards the fields below
	viewers map[chan JPEG]*viewer
	job     *watchJob     // pending, latest wins
	wake    chan struct{} // to the encoder
	running bool          // encoder goroutine alive
	latest  JPEG
	offered time.Time
}

// viewer is one watcher's pace.
type viewer struct {
	every time.Duration // between two frames; 0: every frame offered
	next  time.Time     // when it is due a frame
	want  bool          // the pending job is for it too
}

func newFrameHub(maxFPS float64, encodes *atomic.Uint64) *frameHub {
	return &frameHub{maxFPS: maxFPS, encodes: encodes, viewers: map[chan JPEG]*viewer{}, wake: make(chan struct{}, 1)}
}

// watching reports whether a frame should be offered now: some viewer is
// due one, and the hub's own cap allows it. The viewers due are marked to
// receive it.
func (h *frameHub) watching(now time.Time) bool {
	if h.n.Load() == 0 {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.maxFPS > 0 && now.Sub(h.offered) < time.Duration(float64(time.Second)/h.maxFPS) {
		return false
	}
	due := false
	for _, v := range h.viewers {
		if !now.Before(v.next) {
			v.want = true
			// Keep the pace without drifting, but never owe a burst.
			v.next = v.next.Add(v.every)
			if v.next.Before(now.Add(v.every / 2)) {
				v.next = now.Add(v.every / 2)
			}
			due = true
		}
	}
	if due {
		h.offered = now
	}
	return due
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

// watch adds a viewer that wants at most fps frames a second (0 or more
// than the hub's cap: the cap) and returns its channel and a cancel
// function. The first frame comes as soon as one is processed.
func (h *frameHub) watch(fps float64) (<-chan JPEG, func()) {
	ch := make(chan JPEG, 1)
	v := &viewer{}
	if fps > 0 && (h.maxFPS <= 0 || fps < h.maxFPS) {
		v.every = time.Duration(float64(time.Second) / fps)
	}
	h.mu.Lock()
	h.viewers[ch] = v
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
		for ch, v := range h.viewers {
			if !v.want {
				continue
			}
			v.want = false
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
