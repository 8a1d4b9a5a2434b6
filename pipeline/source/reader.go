package source

import (
	"context"
	"errors"
	"sync"
	"time"

	"gocv.io/x/gocv"
)

// ErrEnd is returned by Reader.Read when a finite source has no more
// frames.
var ErrEnd = errors.New("end of source")

// Reader reads frames from an opened source. It is used by one goroutine.
type Reader interface {
	// Read reads the next frame into dst (8-bit BGR) and returns its scene
	// time: the media timestamp for a file, the wall clock for a live
	// source. It returns ErrEnd at the end of a finite source.
	Read(ctx context.Context, dst *gocv.Mat) (time.Time, error)
	Close() error
}

// Waiter is a Reader that can tell how much of its last Read was spent
// waiting for the frame rather than reading and decoding it. Run reports
// the two apart (Frame.Took, Frame.Waited), so a stage time shows the work
// and not the frame interval.
type Waiter interface {
	// Waited returns how long the last Read waited: for its pace (a test
	// pattern, an image set with fps, a file read in real time), or, with
	// all true, the whole Read (a camera or stream: OpenCV waits for the
	// next frame and decodes it in one call, the two cannot be told apart).
	Waited() (d time.Duration, all bool)
}

// Opener opens a Target described by a Spec.
type Opener func(ctx context.Context, s Spec, t Target) (Reader, error)

var (
	regMu    sync.Mutex // guards registry
	registry = map[string]Opener{}
)

// Register adds a source for URLs with the given scheme (lower case), e.g.
// a test's failing camera. A duplicate or built-in scheme, or a nil
// opener, panics.
func Register(scheme string, open Opener) {
	regMu.Lock()
	defer regMu.Unlock()
	switch scheme {
	case "", "file", "http", "https", "images", "rtsp", "rtsps", "testpattern", "test", "v4l2":
		panic("source: cannot register built-in scheme " + scheme)
	}
	if _, dup := registry[scheme]; dup || open == nil {
		panic("source: scheme registered twice or nil: " + scheme)
	}
	registry[scheme] = open
}

func lookup(scheme string) (Opener, bool) {
	regMu.Lock()
	defer regMu.Unlock()
	o, ok := registry[scheme]
	return o, ok
}

// open opens t with the built-in or registered opener.
func open(ctx context.Context, s Spec, t Target) (Reader, error) {
	if t.Scheme != "" {
		o, ok := lookup(t.Scheme)
		if !ok {
			return nil, errors.New("unknown scheme " + t.Scheme)
		}
		return o(ctx, s, t)
	}
	switch t.Kind {
	case KindTestPattern:
		return newPattern(s), nil
	case KindImages:
		return openImages(s, t)
	default:
		return openCapture(s, t)
	}
}
