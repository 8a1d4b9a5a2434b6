package pipeline

import (
	"errors"
	"fmt"
	"ledge/internal/redact"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"ledge/internal/yamlstrict"
	"ledge/pipeline/detect"
	"ledge/pipeline/source"
)

// Spec describes one pipeline. Only Name and Source are required; every
// other part is optional and has working defaults (see docs/pipelines.md).
type Spec struct {
	// Name identifies the pipeline (and its hub module): 1-64 letters,
	// digits, '-' or '_'.
	Name string `yaml:"name" json:"name"`
	// Disabled keeps the spec without running it.
	Disabled bool        `yaml:"disabled,omitempty" json:"disabled,omitempty"`
	Source   source.Spec `yaml:"source" json:"source"`
	// Detect runs a model on frames; without it the pipeline only captures
	// (for a live view) and makes no events.
	Detect  *DetectSpec  `yaml:"detect,omitempty" json:"detect,omitempty"`
	Motion  *MotionSpec  `yaml:"motion,omitempty" json:"motion,omitempty"`
	Zones   []ZoneSpec   `yaml:"zones,omitempty" json:"zones,omitempty"`
	Tracker TrackerSpec  `yaml:"tracker,omitempty" json:"tracker,omitzero"`
	Events  EventsSpec   `yaml:"events,omitempty" json:"events,omitzero"`
	Actions []ActionSpec `yaml:"actions,omitempty" json:"actions,omitempty"`
}

// DetectSpec configures the detect stage (package detect).
type DetectSpec = detect.Spec

// MotionSpec configures the motion gate: frames without motion skip
// detection.
type MotionSpec struct {
	// Threshold is the per-pixel grey-level change that counts (1-255,
	// default 25).
	Threshold int `yaml:"threshold,omitempty" json:"threshold,omitempty"`
	// MinArea is the fraction of the frame that must change (default
	// 0.003).
	MinArea float64 `yaml:"minArea,omitempty" json:"minArea,omitempty"`
	// Width is the width frames are shrunk to before differencing (default
	// 160).
	Width int `yaml:"width,omitempty" json:"width,omitempty"`
	// Hold keeps detecting this long after the last motion, so objects
	// that stop are seen to stop (default 1s).
	Hold time.Duration `yaml:"hold,omitempty" json:"hold,omitempty"`
}

// ZoneSpec is a named polygon in normalised coordinates ((0,0) top-left,
// (1,1) bottom-right). An object is in a zone when the middle of the
// bottom edge of its box is.
type ZoneSpec struct {
	Name    string      `yaml:"name" json:"name"`
	Polygon [][]float64 `yaml:"polygon" json:"polygon"`
	// Classes are the labels the zone cares about (default: all).
	Classes []string `yaml:"classes,omitempty" json:"classes,omitempty"`
	// Loiter emits zone.loiter when an object stays longer (0: never).
	Loiter time.Duration `yaml:"loiter,omitempty" json:"loiter,omitempty"`
}

// TrackerSpec tunes the tracker.
type TrackerSpec struct {
	// IoU is the minimum overlap to match a detection to a track (default
	// 0.3).
	IoU float64 `yaml:"iou,omitempty" json:"iou,omitempty"`
	// Distance matches by centre distance, as a multiple of the track's
	// box size, when the overlap is too small (default 0.5; fast objects).
	Distance float64 `yaml:"distance,omitempty" json:"distance,omitempty"`
	// MinFrames is how many frames confirm an object (default 3).
	MinFrames int `yaml:"minFrames,omitempty" json:"minFrames,omitempty"`
	// Timeout loses an object not seen for this long (default 1s).
	Timeout time.Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"`
}

// EventsSpec selects and queues events.
type EventsSpec struct {
	// Types are the event types emitted (default: all).
	Types []string `yaml:"types,omitempty" json:"types,omitempty"`
	// Queue bounds events waiting for dispatch (default 256); overflow is
	// dropped and counted.
	Queue int `yaml:"queue,omitempty" json:"queue,omitempty"`
	// NoLog keeps events out of the event log.
	NoLog bool `yaml:"noLog,omitempty" json:"noLog,omitempty"`
}

// ActionSpec is one action run on events. Type selects it; the other
// fields apply to the types named in their comments.
type ActionSpec struct {
	// Type: mqtt, webhook, gpio, snapshot, log or hub.
	Type string `yaml:"type" json:"type"`
	// Name labels the action in metrics (default: its type and index).
	Name string `yaml:"name,omitempty" json:"name,omitempty"`
	// On, Zones and Classes filter the events the action takes. On
	// defaults to track.start and track.end (one of each per tracked
	// object; a snapshot action: track.start and track.update, keeping the
	// best frame); the raw types (object.enter, zone.enter, ...) are there
	// for actions that want every one.
	On      []string `yaml:"on,omitempty" json:"on,omitempty"`
	Zones   []string `yaml:"zones,omitempty" json:"zones,omitempty"`
	Classes []string `yaml:"classes,omitempty" json:"classes,omitempty"`

	// Retries after a failed attempt (default 3; -1: none), waiting Backoff
	// (default 1s) doubled each time up to 30s; Timeout bounds an attempt
	// (default 5s); Queue bounds events waiting (default 64, overflow
	// dropped and counted).
	Retries int           `yaml:"retries,omitempty" json:"retries,omitempty"`
	Backoff time.Duration `yaml:"backoff,omitempty" json:"backoff,omitempty"`
	Timeout time.Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"`
	Queue   int           `yaml:"queue,omitempty" json:"queue,omitempty"`
	// Cooldown lets at most one event through per period; the others are
	// skipped and counted as limited (0: no limit).
	Cooldown time.Duration `yaml:"cooldown,omitempty" json:"cooldown,omitempty"`

	// URL: mqtt broker (tcp://, ssl://, ws://; empty: the in-process hub)
	// or webhook endpoint (http://, https://).
	URL string `yaml:"url,omitempty" json:"url,omitempty"`
	// Topic (mqtt) may use {pipeline}, {type}, {class} and {zone}; default
	// ledge/{pipeline}/events.
	Topic    string `yaml:"topic,omitempty" json:"topic,omitempty"`
	QoS      int    `yaml:"qos,omitempty" json:"qos,omitempty"`
	Retain   bool   `yaml:"retain,omitempty" json:"retain,omitempty"`
	Username string `yaml:"username,omitempty" json:"username,omitempty"`
	Password string `yaml:"password,omitempty" json:"-"`
	// Headers (webhook) are added to each request.
	Headers map[string]string `yaml:"headers,omitempty" json:"-"`
	// Output (hub, or mqtt without URL) is the module output the event is
	// published on: /messages/modules/<pipeline>/outputs/<output>;
	// default "events".
	Output string `yaml:"output,omitempty" json:"output,omitempty"`

	// Chip (gpio) is the GPIO character device (default gpiochip0); Line
	// the line offset; Pulse how long the line is driven active (default
	// 500ms); ActiveLow inverts it.
	Chip      string        `yaml:"chip,omitempty" json:"chip,omitempty"`
	Line      int           `yaml:"line,omitempty" json:"line,omitempty"`
	Pulse     time.Duration `yaml:"pulse,omitempty" json:"pulse,omitempty"`
	ActiveLow bool          `yaml:"activeLow,omitempty" json:"activeLow,omitempty"`

	// Quality (snapshot) is the JPEG quality, 1-100 (default 85).
	Quality int `yaml:"quality,omitempty" json:"quality,omitempty"`
	// Level (log) is the slog level (default info).
	Level string `yaml:"level,omitempty" json:"level,omitempty"`
}

// Event types. The track.* types follow one tracked object from its
// confirmation to its loss (one stored event per object); the others are
// the raw stream of what the tracker sees.
const (
	TrackStart   = "track.start"
	TrackUpdate  = "track.update"
	TrackEnd     = "track.end"
	ObjectEnter  = "object.enter"
	ObjectLeave  = "object.leave"
	ZoneEnter    = "zone.enter"
	ZoneLeave    = "zone.leave"
	ZoneLoiter   = "zone.loiter"
	CountChanged = "count.changed"
)

// EventTypes lists the event types a pipeline emits.
var EventTypes = []string{CountChanged, ObjectEnter, ObjectLeave, TrackEnd, TrackStart, TrackUpdate, ZoneEnter, ZoneLeave, ZoneLoiter}

// isTrackEvent reports whether ty is one of the track.* types.
func isTrackEvent(ty string) bool { return ty == TrackStart || ty == TrackUpdate || ty == TrackEnd }

// on returns the event types the action takes, with its default.
func (a ActionSpec) on() []string {
	switch {
	case len(a.On) > 0:
		return a.On
	case a.Type == "snapshot":
		return []string{TrackStart, TrackUpdate}
	}
	return []string{TrackStart, TrackEnd}
}

// Action types.
var ActionTypes = []string{"gpio", "hub", "log", "mqtt", "snapshot", "webhook"}

var nameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// IsModelPath reports whether a detect.model value is a file path rather
// than a model name: it contains a '/' or ends in ".onnx".
func IsModelPath(model string) bool { return detect.IsPath(model) }

// ParseSpecs decodes a YAML or JSON list of pipeline specs strictly
// (unknown keys are errors with their line) and validates them. name
// prefixes errors (a file name, or "manifest").
func ParseSpecs(name string, data []byte) ([]Spec, error) {
	var specs []Spec
	if err := yamlstrict.Decode(data, &specs); err != nil {
		var ye *yamlstrict.Error
		if errors.As(err, &ye) && strings.HasPrefix(ye.Path, "[") {
			ye.Path = "pipelines" + ye.Path
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := ValidateSpecs(specs, "pipelines"); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return specs, nil
}

// Encode returns s as ParseSpec reads it back, secrets included (an
// action's password and headers, which JSON leaves out): for storing a
// spec, never for showing it.
func (s Spec) Encode() ([]byte, error) { return yaml.Marshal(s) }

// ParseSpec decodes and validates one spec (a YAML or JSON mapping).
// Errors begin with name; an empty name lets them name the pipeline
// (`pipeline "gate": zones[0].polygon: ...`), or "pipeline spec" when
// the spec has no usable name.
func ParseSpec(name string, data []byte) (Spec, error) {
	label := func(s Spec) string {
		switch {
		case name != "":
			return name
		case nameRe.MatchString(s.Name):
			return fmt.Sprintf("pipeline %q", s.Name)
		}
		return "pipeline spec"
	}
	var s Spec
	if err := yamlstrict.Decode(data, &s); err != nil {
		return Spec{}, fmt.Errorf("%s: %w", label(Spec{}), err)
	}
	if err := s.Validate(""); err != nil {
		return Spec{}, fmt.Errorf("%s: %w", label(s), err)
	}
	return s, nil
}

// ValidateSpecs validates each spec and their names' uniqueness; errors
// name the pipeline and the field (`pipeline "gate": detect.threshold:
// ...`), or path[i].field when the pipeline has no valid name.
func ValidateSpecs(specs []Spec, path string) error {
	var errs []error
	seen := map[string]int{}
	for i, s := range specs {
		p := yamlstrict.Index(path, i)
		if err := s.Validate(""); err != nil {
			for _, e := range unjoin(err) {
				if nameRe.MatchString(s.Name) {
					errs = append(errs, fmt.Errorf("pipeline %q: %w", s.Name, e))
				} else {
					errs = append(errs, fmt.Errorf("%s.%w", p, e))
				}
			}
		}
		if j, dup := seen[s.Name]; dup && s.Name != "" {
			errs = append(errs, fmt.Errorf("%s.name: %q is already the name of %s[%d]", p, s.Name, path, j))
		} else {
			seen[s.Name] = i
		}
	}
	return errors.Join(errs...)
}

// Validate checks the spec; errors name the field under path (e.g.
// "pipelines[1].zones[0].polygon: want at least 3 points, got 2").
func (s Spec) Validate(path string) error {
	v := &validator{}
	at := func(keys ...string) string { return yamlstrict.Field(path, keys...) }
	if !nameRe.MatchString(s.Name) {
		v.bad(at("name"), "%q: want 1-64 letters, digits, '-' or '_', starting with a letter or digit", s.Name)
	}
	if err := s.Source.Validate(); err != nil {
		for _, e := range unjoin(err) {
			v.errs = append(v.errs, fmt.Errorf("%s.%w", at("source"), e))
		}
	}
	if d := s.Detect; d != nil {
		s.validateDetect(v, at("detect"))
	}
	if m := s.Motion; m != nil {
		if m.Threshold < 0 || m.Threshold > 255 {
			v.bad(at("motion", "threshold"), "%d: want 1..255", m.Threshold)
		}
		if !inRange(m.MinArea, 0, 1) {
			v.bad(at("motion", "minArea"), "%v: want a fraction of the frame in 0..1", m.MinArea)
		}
		if m.Width < 0 || (m.Width > 0 && m.Width < 16) || m.Width > 1920 {
			v.bad(at("motion", "width"), "%d: want 16..1920", m.Width)
		}
		if m.Hold < 0 {
			v.bad(at("motion", "hold"), "must not be negative, got %s", m.Hold)
		}
	}
	zones := map[string]bool{}
	for i, z := range s.Zones {
		zp := yamlstrict.Index(at("zones"), i)
		if !nameRe.MatchString(z.Name) {
			v.bad(yamlstrict.Field(zp, "name"), "%q: want 1-64 letters, digits, '-' or '_'", z.Name)
		} else if zones[z.Name] {
			v.bad(yamlstrict.Field(zp, "name"), "%q is used by another zone", z.Name)
		}
		zones[z.Name] = true
		if len(z.Polygon) < 3 {
			v.bad(yamlstrict.Field(zp, "polygon"), "want at least 3 points, got %d", len(z.Polygon))
		}
		for j, p := range z.Polygon {
			if len(p) != 2 {
				v.bad(yamlstrict.Index(yamlstrict.Field(zp, "polygon"), j), "want [x, y], got %d numbers", len(p))
				continue
			}
			if !inRange(p[0], 0, 1) || !inRange(p[1], 0, 1) {
				v.bad(yamlstrict.Index(yamlstrict.Field(zp, "polygon"), j), "[%v, %v]: want normalised coordinates in 0..1", p[0], p[1])
			}
		}
		if z.Loiter < 0 {
			v.bad(yamlstrict.Field(zp, "loiter"), "must not be negative, got %s", z.Loiter)
		}
		v.labels(yamlstrict.Field(zp, "classes"), z.Classes)
	}
	t := s.Tracker
	if !inRange(t.IoU, 0, 1) {
		v.bad(at("tracker", "iou"), "%v: want 0..1", t.IoU)
	}
	if !inRange(t.Distance, 0, 10) {
		v.bad(at("tracker", "distance"), "%v: want 0..10", t.Distance)
	}
	if t.MinFrames < 0 || t.MinFrames > 1000 {
		v.bad(at("tracker", "minFrames"), "%d: want 1..1000", t.MinFrames)
	}
	if t.Timeout < 0 {
		v.bad(at("tracker", "timeout"), "must not be negative, got %s", t.Timeout)
	}
	for i, ty := range s.Events.Types {
		if !slices.Contains(EventTypes, ty) {
			v.bad(yamlstrict.Index(at("events", "types"), i), "unknown event type %q (want %s)", ty, strings.Join(EventTypes, ", "))
		}
	}
	if s.Events.Queue < 0 || s.Events.Queue > 100000 {
		v.bad(at("events", "queue"), "%d: want 1..100000", s.Events.Queue)
	}
	names := map[string]bool{}
	snapshots := 0
	for i, a := range s.Actions {
		ap := yamlstrict.Index(at("actions"), i)
		a.validate(v, ap, zones)
		if a.Type == "snapshot" {
			if snapshots++; snapshots > 1 {
				v.bad(yamlstrict.Field(ap, "type"), "one snapshot action per pipeline (filter it with on, zones and classes)")
			}
		}
		if n := a.name(i); names[n] {
			v.bad(yamlstrict.Field(ap, "name"), "%q is used by another action", n)
		} else {
			names[n] = true
		}
	}
	return errors.Join(v.errs...)
}

func (s Spec) validateDetect(v *validator, p string) {
	d := s.Detect
	if strings.TrimSpace(d.Model) == "" {
		v.bad(yamlstrict.Field(p, "model"), "must name a model file or a model")
	}
	switch strings.ToLower(d.Kind) {
	case "", "auto", "yolox", "yolov8", "yolov5", "fastestdet":
	default:
		v.bad(yamlstrict.Field(p, "kind"), "unknown model kind %q (want auto, yolox, yolov8, yolov5 or fastestdet)", d.Kind)
	}
	if d.Threshold != 0 && !inRange(d.Threshold, math.SmallestNonzeroFloat64, 1) {
		v.bad(yamlstrict.Field(p, "threshold"), "%v: want a score in (0, 1]", d.Threshold)
	}
	if d.IoU != 0 && !inRange(d.IoU, math.SmallestNonzeroFloat64, 1) {
		v.bad(yamlstrict.Field(p, "iou"), "%v: want (0, 1]", d.IoU)
	}
	if !inRange(d.MaxFPS, 0, 1000) {
		v.bad(yamlstrict.Field(p, "maxFps"), "%v: want 0..1000", d.MaxFPS)
	}
	if d.Every < 0 || d.Every > 10000 {
		v.bad(yamlstrict.Field(p, "every"), "%d: want 1..10000", d.Every)
	}
	if d.Sessions < 0 || d.Sessions > 64 {
		v.bad(yamlstrict.Field(p, "sessions"), "%d: want 1..64", d.Sessions)
	}
	if d.Threads < 0 || d.Threads > 256 {
		v.bad(yamlstrict.Field(p, "threads"), "%d: want 1..256", d.Threads)
	}
	v.labels(yamlstrict.Field(p, "classes"), d.Classes)
}

func (a ActionSpec) validate(v *validator, p string, zones map[string]bool) {
	if !slices.Contains(ActionTypes, a.Type) {
		v.bad(yamlstrict.Field(p, "type"), "unknown action %q (want %s)", a.Type, strings.Join(ActionTypes, ", "))
		return
	}
	if a.Name != "" && !nameRe.MatchString(a.Name) {
		v.bad(yamlstrict.Field(p, "name"), "%q: want 1-64 letters, digits, '-' or '_'", a.Name)
	}
	for i, ty := range a.On {
		if !slices.Contains(EventTypes, ty) {
			v.bad(yamlstrict.Index(yamlstrict.Field(p, "on"), i), "unknown event type %q (want %s)", ty, strings.Join(EventTypes, ", "))
		}
	}
	for i, z := range a.Zones {
		if !zones[z] {
			v.bad(yamlstrict.Index(yamlstrict.Field(p, "zones"), i), "no zone named %q in this pipeline", z)
		}
	}
	v.labels(yamlstrict.Field(p, "classes"), a.Classes)
	if a.Retries < -1 || a.Retries > 100 {
		v.bad(yamlstrict.Field(p, "retries"), "%d: want -1..100", a.Retries)
	}
	if a.Backoff < 0 {
		v.bad(yamlstrict.Field(p, "backoff"), "must not be negative, got %s", a.Backoff)
	}
	if a.Timeout < 0 {
		v.bad(yamlstrict.Field(p, "timeout"), "must not be negative, got %s", a.Timeout)
	}
	if a.Queue < 0 || a.Queue > 100000 {
		v.bad(yamlstrict.Field(p, "queue"), "%d: want 1..100000", a.Queue)
	}
	if a.Cooldown < 0 {
		v.bad(yamlstrict.Field(p, "cooldown"), "must not be negative, got %s", a.Cooldown)
	}
	switch a.Type {
	case "mqtt":
		if a.URL != "" {
			v.url(yamlstrict.Field(p, "url"), a.URL, "tcp", "ssl", "tls", "mqtt", "mqtts", "ws", "wss")
		}
		if a.QoS < 0 || a.QoS > 2 {
			v.bad(yamlstrict.Field(p, "qos"), "%d: want 0, 1 or 2", a.QoS)
		}
		if strings.ContainsAny(a.Topic, "#+") {
			v.bad(yamlstrict.Field(p, "topic"), "%q: a publish topic has no wildcards", a.Topic)
		}
	case "webhook":
		if a.URL == "" {
			v.bad(yamlstrict.Field(p, "url"), "must be set for a webhook")
		} else {
			v.url(yamlstrict.Field(p, "url"), a.URL, "http", "https")
		}
	case "gpio":
		if a.Line < 0 || a.Line > 1023 {
			v.bad(yamlstrict.Field(p, "line"), "%d: want a line offset 0..1023", a.Line)
		}
		if a.Pulse < 0 || a.Pulse > time.Hour {
			v.bad(yamlstrict.Field(p, "pulse"), "%s: want 0..1h", a.Pulse)
		}
		if strings.Contains(a.Chip, "..") {
			v.bad(yamlstrict.Field(p, "chip"), "%q: want a chip name like gpiochip0 or a /dev path", a.Chip)
		}
	case "snapshot":
		if a.Quality < 0 || a.Quality > 100 {
			v.bad(yamlstrict.Field(p, "quality"), "%d: want 1..100", a.Quality)
		}
	case "log":
		switch strings.ToLower(a.Level) {
		case "", "debug", "info", "warn", "error":
		default:
			v.bad(yamlstrict.Field(p, "level"), "%q: want debug, info, warn or error", a.Level)
		}
	case "hub":
		if a.Output != "" && !nameRe.MatchString(a.Output) {
			v.bad(yamlstrict.Field(p, "output"), "%q: want 1-64 letters, digits, '-' or '_'", a.Output)
		}
	}
	if a.Output != "" && !nameRe.MatchString(a.Output) && a.Type != "hub" {
		v.bad(yamlstrict.Field(p, "output"), "%q: want 1-64 letters, digits, '-' or '_'", a.Output)
	}
}

func (a ActionSpec) name(i int) string {
	if a.Name != "" {
		return a.Name
	}
	return fmt.Sprintf("%s-%d", a.Type, i)
}

type validator struct{ errs []error }

func (v *validator) bad(field, format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf("%s: "+format, append([]any{field}, args...)...))
}

func (v *validator) labels(field string, labels []string) {
	for i, l := range labels {
		if strings.TrimSpace(l) == "" {
			v.bad(yamlstrict.Index(field, i), "empty class name")
		}
	}
}

func (v *validator) url(field, u string, schemes ...string) {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok || rest == "" || !slices.Contains(schemes, strings.ToLower(scheme)) {
		v.bad(field, "%q: want %s://host...", redactURL(u), strings.Join(schemes, "://, ")+"")
	}
}

// Redacted is a copy of s fit to show: passwords in its source and action
// URLs are masked (action passwords and headers never appear in JSON).
func (s Spec) Redacted() Spec {
	s.Source.URL = redact.URL(s.Source.URL)
	s.Actions = slices.Clone(s.Actions)
	for i := range s.Actions {
		s.Actions[i].URL = redact.URL(s.Actions[i].URL)
	}
	return s
}

// redactURL hides a password in a URL for error messages.
func redactURL(u string) string { return redact.URL(u) }

func inRange(f, lo, hi float64) bool { return f >= lo && f <= hi && !math.IsNaN(f) }

// unjoin splits an errors.Join error into its parts.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
