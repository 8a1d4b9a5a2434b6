package web

import (
	"encoding/json"
	"time"
)

// The pipeline engine's JSON, as the API answers it (openapi.json:
// Pipeline, SourceState, StageLatency, ActionStats, PipelineSample,
// EventPage, PipelineEvent, Box).

// Pipeline is one pipeline: its state and counters, who defines it and
// its spec.
type Pipeline struct {
	PipelineStats
	// Owner is who defines it: config (ledge.yaml), api (the dashboard or
	// the API) or deployment.
	Owner string `json:"owner"`
	// Spec is its spec (docs/pipelines.md) with passwords in URLs masked;
	// absent for a stored pipeline whose spec no longer reads.
	Spec json.RawMessage `json:"spec,omitempty"`
}

// PipelineStats describes a pipeline at one moment.
type PipelineStats struct {
	Name    string `json:"name"`
	Running bool   `json:"running"`
	// State is running, starting, waiting, backoff, failed, ended or
	// stopped; Reason says why it is not running, FailingSince since when
	// it fails.
	State        string      `json:"state"`
	Reason       string      `json:"reason,omitempty"`
	FailingSince time.Time   `json:"failingSince,omitzero"`
	Source       SourceState `json:"source"`
	Model        string      `json:"model,omitempty"`
	ModelVersion string      `json:"modelVersion,omitempty"`

	FramesIn        uint64 `json:"framesIn"`
	FramesOut       uint64 `json:"framesOut"`
	Dropped         uint64 `json:"dropped"`
	SkippedMotion   uint64 `json:"skippedMotion"`
	SkippedRate     uint64 `json:"skippedRate"`
	Detections      uint64 `json:"detections"`
	DetectErrors    uint64 `json:"detectErrors"`
	Events          uint64 `json:"events"`
	EventsDropped   uint64 `json:"eventsDropped"`
	Encodes         uint64 `json:"encodes"`
	SnapshotEncodes uint64 `json:"snapshotEncodes"`
	Watchers        int    `json:"watchers"`

	FPSIn  float64 `json:"fpsIn"`
	FPSOut float64 `json:"fpsOut"`

	// Latency is per stage (capture, frame_wait, motion, detect, track,
	// action, capture_to_action, capture_to_result, capture_to_detection;
	// docs/pipelines.md says what each covers).
	Latency map[string]StageLatency `json:"latency"`
	Actions []ActionStats           `json:"actions,omitempty"`
}

// SourceState is what a pipeline's source is doing.
type SourceState struct {
	// Phase is connecting, streaming, backoff, ended or stopped.
	Phase      string    `json:"phase"`
	Since      time.Time `json:"since,omitzero"`
	Reason     string    `json:"reason,omitempty"`
	Retry      time.Time `json:"retry,omitzero"`
	Failures   int       `json:"failures"`
	Reconnects int       `json:"reconnects"`
}

// StageLatency summarises a stage's recent durations, in nanoseconds.
type StageLatency struct {
	Count uint64        `json:"count"`
	Sum   time.Duration `json:"sum"`
	P50   time.Duration `json:"p50"`
	P95   time.Duration `json:"p95"`
	P99   time.Duration `json:"p99"`
	Max   time.Duration `json:"max"`
}

// ActionStats counts one action's work.
type ActionStats struct {
	Name      string `json:"name"`
	Type      string `json:"type"`
	Delivered uint64 `json:"delivered"`
	Failed    uint64 `json:"failed"`
	Retries   uint64 `json:"retries"`
	Dropped   uint64 `json:"dropped"`
	Limited   uint64 `json:"limited"`
	LastError string `json:"lastError,omitempty"`
	// Failing: its last event was given up (the target is down); it
	// clears with the next delivery.
	Failing      bool      `json:"failing,omitempty"`
	FailingSince time.Time `json:"failingSince,omitzero"`
}

// PipelineSample is one point of a pipeline's charts.
type PipelineSample struct {
	Time   time.Time `json:"t"`
	FPSIn  float64   `json:"fpsIn"`
	FPSOut float64   `json:"fpsOut"`
	// P50 and P99 are capture-to-result latency in milliseconds.
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
}

// EventPage is one page of the event log, newest first; Next is the
// cursor for the next page (?before=), 0 at the end.
type EventPage struct {
	Events []PipelineEvent `json:"events"`
	Next   int64           `json:"next"`
}

// PipelineEvent is something a pipeline saw (docs/pipelines.md: events).
type PipelineEvent struct {
	ID       int64         `json:"id,omitempty"`
	Type     string        `json:"type"`
	Pipeline string        `json:"pipeline"`
	Time     time.Time     `json:"time"`
	Frame    uint64        `json:"frame"`
	Zone     string        `json:"zone,omitempty"`
	Class    string        `json:"class,omitempty"`
	TrackID  int64         `json:"trackId,omitempty"`
	Score    float32       `json:"score,omitempty"`
	Box      Box           `json:"box"`
	Width    int           `json:"width"`
	Height   int           `json:"height"`
	Count    int           `json:"count,omitempty"`
	Previous int           `json:"previous,omitempty"`
	Dwell    time.Duration `json:"dwell,omitempty"`
	Snapshot string        `json:"snapshot,omitempty"`
	EventID  int64         `json:"eventId,omitempty"`
	Start    time.Time     `json:"start,omitzero"`
	End      time.Time     `json:"end,omitzero"`
	Zones    []string      `json:"zones,omitempty"`
	Model    string        `json:"model,omitempty"`
	Source   *SourceState  `json:"source,omitempty"`
	Captured time.Time     `json:"captured,omitzero"`
}

// Box is a rectangle in frame pixels, (x1, y1) its top-left corner.
type Box struct {
	X1 float32 `json:"x1"`
	Y1 float32 `json:"y1"`
	X2 float32 `json:"x2"`
	Y2 float32 `json:"y2"`
}
