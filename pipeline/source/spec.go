package source

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Spec describes a source. URL says what it is:
//
//	testpattern:              moving shapes, Width x Height at FPS
//	/dev/video0, v4l2:/dev/video0
//	rtsp://, rtsps://, http://, https://   (MJPEG over HTTP included)
//	file:/path/clip.mp4, /path/clip.mp4, clip.mp4   a video file
//	images:/path/*.jpg, images:/path/dir            an image folder or glob
//
// plus any scheme a test or plug-in registered with [Register].
type Spec struct {
	URL string `yaml:"url" json:"url"`
	// Width, Height and FPS ask a V4L2 device for a mode, size the test
	// pattern, and pace an image set (FPS).
	Width  int     `yaml:"width,omitempty" json:"width,omitempty"`
	Height int     `yaml:"height,omitempty" json:"height,omitempty"`
	FPS    float64 `yaml:"fps,omitempty" json:"fps,omitempty"`
	// FourCC asks a V4L2 device for a pixel format, e.g. MJPG or YUYV.
	FourCC string `yaml:"fourcc,omitempty" json:"fourcc,omitempty"`
	// Loop restarts a file or image set at its end.
	Loop bool `yaml:"loop,omitempty" json:"loop,omitempty"`
	// Realtime paces a file at its own frame rate (an image set at FPS), as
	// a camera would deliver it. Without it a file is read as fast as the
	// pipeline takes frames, and no frame is dropped.
	Realtime bool `yaml:"realtime,omitempty" json:"realtime,omitempty"`
	// Backoff bounds the waits between reconnection attempts.
	Backoff Backoff `yaml:"backoff,omitempty" json:"backoff,omitempty"`
}

// Backoff is a capped exponential back-off: Initial, doubled after each
// failure up to Max, reset after a frame is read.
type Backoff struct {
	Initial time.Duration `yaml:"initial,omitempty" json:"initial,omitempty"`
	Max     time.Duration `yaml:"max,omitempty" json:"max,omitempty"`
}

// Default back-off bounds.
const (
	DefaultBackoffInitial = 500 * time.Millisecond
	DefaultBackoffMax     = 30 * time.Second
)

// Kind is what a URL resolved to.
type Kind string

// Built-in kinds.
const (
	KindTestPattern Kind = "testpattern"
	KindV4L2        Kind = "v4l2"
	KindStream      Kind = "stream"
	KindFile        Kind = "file"
	KindImages      Kind = "images"
)

var devRe = regexp.MustCompile(`^/dev/video[0-9]+$`)

// Target is a parsed Spec.URL: the kind and what to open.
type Target struct {
	Kind   Kind
	Scheme string // registered scheme for plug-in sources
	Path   string // file, glob, device or URL to open
}

// Parse resolves the URL to a Target; the error says what is wrong with it.
func (s Spec) Parse() (Target, error) {
	u := strings.TrimSpace(s.URL)
	if u == "" {
		return Target{}, errors.New("must not be empty")
	}
	if devRe.MatchString(u) {
		return Target{Kind: KindV4L2, Path: u}, nil
	}
	scheme, rest, ok := strings.Cut(u, ":")
	if !ok || strings.ContainsAny(scheme, `/\.`) || scheme == "" {
		// A path without a scheme: a video file.
		return Target{Kind: KindFile, Path: u}, nil
	}
	switch strings.ToLower(scheme) {
	case "testpattern", "test":
		return Target{Kind: KindTestPattern}, nil
	case "v4l2":
		p := strings.TrimPrefix(rest, "//")
		if !devRe.MatchString(p) {
			return Target{}, fmt.Errorf("%q: want v4l2:/dev/videoN", u)
		}
		return Target{Kind: KindV4L2, Path: p}, nil
	case "rtsp", "rtsps", "http", "https":
		pu, err := url.Parse(u)
		if err != nil {
			return Target{}, fmt.Errorf("%q: %v", u, err)
		}
		if pu.Host == "" {
			return Target{}, fmt.Errorf("%q: no host", u)
		}
		return Target{Kind: KindStream, Path: u}, nil
	case "file":
		p := strings.TrimPrefix(rest, "//")
		if p == "" {
			return Target{}, fmt.Errorf("%q: no path", u)
		}
		return Target{Kind: KindFile, Path: p}, nil
	case "images":
		p := strings.TrimPrefix(rest, "//")
		if p == "" {
			return Target{}, fmt.Errorf("%q: no folder or glob", u)
		}
		if _, err := filepath.Match(p, ""); err != nil {
			return Target{}, fmt.Errorf("%q: bad glob: %v", u, err)
		}
		return Target{Kind: KindImages, Path: p}, nil
	}
	if _, ok := lookup(strings.ToLower(scheme)); ok {
		return Target{Scheme: strings.ToLower(scheme), Path: rest}, nil
	}
	if len(scheme) == 1 { // a Windows-like drive letter is no scheme here either
		return Target{Kind: KindFile, Path: u}, nil
	}
	return Target{}, fmt.Errorf("unknown scheme %q (want %s)", scheme, strings.Join(Schemes(), ", "))
}

// Validate checks the spec without opening anything. Errors name the field
// relative to the source ("url: ...", "fps: ...").
func (s Spec) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{field}, args...)...))
	}
	t, err := s.Parse()
	if err != nil {
		bad("url", "%v", err)
	}
	if s.Width < 0 || s.Width > 16384 {
		bad("width", "%d: want 0..16384", s.Width)
	}
	if s.Height < 0 || s.Height > 16384 {
		bad("height", "%d: want 0..16384", s.Height)
	}
	if (s.Width == 0) != (s.Height == 0) {
		bad("width", "set width and height together")
	}
	if s.FPS < 0 || s.FPS > 1000 || s.FPS != s.FPS {
		bad("fps", "%v: want 0..1000", s.FPS)
	}
	if s.FourCC != "" && len(s.FourCC) != 4 {
		bad("fourcc", "%q: want 4 characters, e.g. MJPG", s.FourCC)
	}
	if err == nil && s.Loop && t.Kind != KindFile && t.Kind != KindImages {
		bad("loop", "only a file or image set loops")
	}
	if s.Backoff.Initial < 0 {
		bad("backoff.initial", "must not be negative, got %s", s.Backoff.Initial)
	}
	if s.Backoff.Max < 0 || (s.Backoff.Max > 0 && s.Backoff.Max < s.Backoff.Initial) {
		bad("backoff.max", "%s: want at least backoff.initial", s.Backoff.Max)
	}
	return errors.Join(errs...)
}

// Finite reports whether the source ends by itself (a file or image set
// that does not loop).
func (t Target) Finite(s Spec) bool {
	return (t.Kind == KindFile || t.Kind == KindImages) && !s.Loop
}

// Lossless reports whether frames must not be dropped between the source
// and the pipeline: a file or image set read as fast as it is consumed.
// Live sources (cameras, streams, paced files, the test pattern) drop the
// older frame instead, so a slow detector never builds a queue.
func (t Target) Lossless(s Spec) bool {
	return (t.Kind == KindFile || t.Kind == KindImages) && !s.Realtime
}

// Schemes lists the URL schemes known, sorted.
func Schemes() []string {
	out := []string{"file", "http", "https", "images", "rtsp", "rtsps", "testpattern", "v4l2"}
	regMu.Lock()
	for s := range registry {
		out = append(out, s)
	}
	regMu.Unlock()
	slices.Sort(out)
	return out
}
