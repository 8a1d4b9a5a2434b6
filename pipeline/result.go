package pipeline

import "time"

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

// Results subscribes to the per-frame results of the named pipeline, with
// a channel of buf results (a slow reader loses results). It is meant for
// tests, tools and model swaps, not for hot paths. Call cancel when done.
func (e *Engine) Results(name string, buf int) (<-chan Result, func(), error) {
	sl, err := e.existingSlot(name)
	if err != nil {
		return nil, nil, err
	}
	if buf <= 0 {
		buf = 64
	}
	sub := sl.results.Subscribe(buf)
	return sub.C, sub.Cancel, nil
}
