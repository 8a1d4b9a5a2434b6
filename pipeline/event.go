package pipeline

import (
	"time"

	"ledge/pipeline/source"
)

// Event is something a pipeline saw: an object entering or leaving the
// view or a zone, loitering, or a zone's count of a class changing.
type Event struct {
	// ID is the event log's id (0 when the event was not logged).
	ID       int64     `json:"id,omitempty"`
	Type     string    `json:"type"`
	Pipeline string    `json:"pipeline"`
	Time     time.Time `json:"time"` // scene time of the frame
	Frame    uint64    `json:"frame"`
	Zone     string    `json:"zone,omitempty"`
	Class    string    `json:"class,omitempty"`
	TrackID  int64     `json:"trackId,omitempty"`
	Score    float32   `json:"score,omitempty"`
	Box      Box       `json:"box"`
	// Width and Height are the frame size the box refers to.
	Width  int `json:"width"`
	Height int `json:"height"`
	// Count and Previous are a zone's count of Class (count.changed).
	Count    int `json:"count,omitempty"`
	Previous int `json:"previous,omitempty"`
	// Dwell is how long the object was in the zone or in view (zone.leave,
	// zone.loiter, object.leave).
	Dwell time.Duration `json:"dwell,omitempty"`
	// Snapshot is the annotated JPEG's path relative to the snapshot dir.
	Snapshot string `json:"snapshot,omitempty"`
	// Model is the version of the model that produced the detection.
	Model string `json:"model,omitempty"`
	// Source is the new state of the source (type source.state, sent to
	// subscribers only).
	Source *source.State `json:"source,omitempty"`
	// Captured is when the frame was read (wall clock), for latency.
	Captured time.Time `json:"captured,omitzero"` // not kept by the event log

	jpeg []byte // the annotated frame, when an action wants a snapshot
}

// SourceState is the type of the events that tell subscribers a
// pipeline's source changed state; they are not logged nor acted on.
const SourceState = "source.state"

// wants reports whether a filter (types, zones, classes; empty = all)
// takes e.
func wants(types, zones, classes []string, e *Event) bool {
	return matchAny(types, e.Type) && (len(zones) == 0 || (e.Zone != "" && matchAny(zones, e.Zone))) && matchAny(classes, e.Class)
}

func matchAny(list []string, s string) bool {
	if len(list) == 0 {
		return true
	}
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
