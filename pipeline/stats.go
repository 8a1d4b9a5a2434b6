package pipeline

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"ledge/pipeline/source"
)

// Stage names used in Stats.Latency.
const (
	// StageCapture is reading and decoding one frame, without waiting for
	// it (not recorded for a camera or stream: see StageFrameWait).
	StageCapture = "capture"
	// StageFrameWait is the source waiting for the next frame: the pace of
	// a test pattern, an image set with fps or a file read in real time;
	// for a camera or stream the whole read (OpenCV waits for the frame and
	// decodes it in one call), i.e. the frame interval, or the read and
	// decode when they take longer than that.
	StageFrameWait = "frame_wait"
	StageMotion    = "motion" // the motion gate
	StageDetect    = "detect" // letterbox, inference, decode, NMS
	StageTrack     = "track"  // filters, zones, tracker
	StageAction    = "action" // one action attempt that succeeded
	// StageCaptureToAction runs from reading a frame to the end of an
	// action for an event of that frame.
	StageCaptureToAction = "capture_to_action"
	// StageCaptureToResult runs from reading a frame to the end of its
	// processing (every processed frame, with or without events).
	StageCaptureToResult = "capture_to_result"
	// StageCaptureToDetection is StageCaptureToResult for the frames the
	// detector ran on (what a viewer waits for a box).
	StageCaptureToDetection = "capture_to_detection"
)

// Latency summarises a stage's recent durations (the last 1024 samples).
type Latency struct {
	Count uint64        `json:"count"` // samples ever recorded
	Sum   time.Duration `json:"sum"`   // of all samples ever recorded
	P50   time.Duration `json:"p50"`
	P95   time.Duration `json:"p95"`
	P99   time.Duration `json:"p99"`
	Max   time.Duration `json:"max"` // of the recent samples
}

// ActionStats counts one action's work.
type ActionStats struct {
	Name      string `json:"name"`
	Type      string `json:"type"`
	Delivered uint64 `json:"delivered"`
	Failed    uint64 `json:"failed"`              // events given up after the retries
	Retries   uint64 `json:"retries"`             // attempts after a failure
	Dropped   uint64 `json:"dropped"`             // queue full
	Limited   uint64 `json:"limited"`             // skipped within the cooldown
	LastError string `json:"lastError,omitempty"` // the last failed attempt's, kept after a recovery
	// Failing says the last event was given up (its target is down, or
	// refuses); it clears with the next delivery.
	Failing      bool      `json:"failing,omitempty"`
	FailingSince time.Time `json:"failingSince,omitzero"`
}

// Pipeline states (Stats.State).
const (
	StateRunning  = "running"  // frames flow
	StateStarting = "starting" // its source is opening for the first time
	StateWaiting  = "waiting"  // frames flow, its model is on its way (not detecting yet)
	StateBackoff  = "backoff"  // its source failed and is retried with back-off
	StateFailed   = "failed"   // it could not be built (e.g. its model file is missing); retried with back-off
	StateEnded    = "ended"    // a finite source (a file without loop) ended
	StateStopped  = "stopped"  // stopped by the operator, or ledge is stopping
)

// Stats describes a pipeline at one moment.
type Stats struct {
	Name    string `json:"name"`
	Running bool   `json:"running"`
	// State sums the pipeline up (StateRunning...); Reason says why it is
	// not running ("" when it is), FailingSince since when it fails
	// (backoff and failed).
	State        string       `json:"state"`
	Reason       string       `json:"reason,omitempty"`
	FailingSince time.Time    `json:"failingSince,omitzero"`
	Source       source.State `json:"source"`
	// Model is the model in use and its version ("" without detection).
	Model        string `json:"model,omitempty"`
	ModelVersion string `json:"modelVersion,omitempty"`

	FramesIn        uint64 `json:"framesIn"`        // captured
	FramesOut       uint64 `json:"framesOut"`       // processed
	Dropped         uint64 `json:"dropped"`         // replaced by a newer frame before processing
	SkippedMotion   uint64 `json:"skippedMotion"`   // not detected: no motion
	SkippedRate     uint64 `json:"skippedRate"`     // not detected: maxFps or every
	Detections      uint64 `json:"detections"`      // objects after filters
	DetectErrors    uint64 `json:"detectErrors"`    // failed detector runs
	Events          uint64 `json:"events"`          // emitted
	EventsDropped   uint64 `json:"eventsDropped"`   // event queue full
	Encodes         uint64 `json:"encodes"`         // JPEG encodes for viewers
	SnapshotEncodes uint64 `json:"snapshotEncodes"` // JPEG encodes for snapshots
	Watchers        int    `json:"watchers"`

	FPSIn  float64 `json:"fpsIn"`
	FPSOut float64 `json:"fpsOut"`

	Latency map[string]Latency `json:"latency"`
	Actions []ActionStats      `json:"actions,omitempty"`
}

// ring keeps the last samples of a duration. Safe for concurrent use.
type ring struct {
	mu    sync.Mutex // guards the fields below
	buf   [1024]time.Duration
	n     int
	count uint64
	sum   time.Duration
}

func (r *ring) add(d time.Duration) {
	r.mu.Lock()
	r.buf[r.n%len(r.buf)] = d
	r.n++
	r.count++
	r.sum += d
	r.mu.Unlock()
}

func (r *ring) summary() Latency {
	r.mu.Lock()
	n := min(r.n, len(r.buf))
	s := slices.Clone(r.buf[:n])
	l := Latency{Count: r.count, Sum: r.sum}
	r.mu.Unlock()
	if n == 0 {
		return l
	}
	slices.Sort(s)
	q := func(p float64) time.Duration { return s[min(n-1, int(p*float64(n)))] }
	l.P50, l.P95, l.P99, l.Max = q(0.50), q(0.95), q(0.99), s[n-1]
	return l
}

// meter measures a rate from the times of the last events. Safe for
// concurrent use.
type meter struct {
	mu sync.Mutex // guards the fields below
	ts [64]time.Time
	n  int
}

func (m *meter) mark(t time.Time) {
	m.mu.Lock()
	m.ts[m.n%len(m.ts)] = t
	m.n++
	m.mu.Unlock()
}

// rate is events per second over the recent window; 0 when nothing
// happened for 2 s.
func (m *meter) rate(now time.Time) float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := min(m.n, len(m.ts))
	if k < 2 {
		return 0
	}
	last := m.ts[(m.n-1)%len(m.ts)]
	first := m.ts[(m.n-k)%len(m.ts)]
	if now.Sub(last) > 2*time.Second || !last.After(first) {
		return 0
	}
	return float64(k-1) / last.Sub(first).Seconds()
}

// counters are a pipeline's counters, updated with atomics.
type counters struct {
	in, out, dropped, skipMotion, skipRate, dets, detErr, events, evDropped, encodes, snapEncodes atomic.Uint64
	fpsIn, fpsOut                                                                                 meter
	lat                                                                                           map[string]*ring
}

func newCounters() *counters {
	c := &counters{lat: map[string]*ring{}}
	for _, s := range []string{StageCapture, StageFrameWait, StageMotion, StageDetect, StageTrack, StageAction, StageCaptureToAction, StageCaptureToResult, StageCaptureToDetection} {
		c.lat[s] = &ring{}
	}
	return c
}

func (c *counters) fill(s *Stats, now time.Time) {
	s.FramesIn, s.FramesOut, s.Dropped = c.in.Load(), c.out.Load(), c.dropped.Load()
	s.SkippedMotion, s.SkippedRate = c.skipMotion.Load(), c.skipRate.Load()
	s.Detections, s.DetectErrors = c.dets.Load(), c.detErr.Load()
	s.Events, s.EventsDropped = c.events.Load(), c.evDropped.Load()
	s.Encodes, s.SnapshotEncodes = c.encodes.Load(), c.snapEncodes.Load()
	s.FPSIn, s.FPSOut = c.fpsIn.rate(now), c.fpsOut.rate(now)
	s.Latency = map[string]Latency{}
	for k, r := range c.lat {
		s.Latency[k] = r.summary()
	}
}
