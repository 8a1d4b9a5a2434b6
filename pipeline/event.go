package pipeline

import (
	"slices"
	"time"

	"ledge/pipeline/source"
)

// Event is something a pipeline saw. The track.* types follow one tracked
// object (track.start when it is confirmed, track.update at most once a
// second while its best score or its zones change, track.end when it is
// lost): one stored event per object, with its start, end, label, best
// score and box, the zones it entered and its best snapshot. The raw types
// say what happened on one frame: an object entering or leaving the view
// or a zone, loitering, or a zone's count of a class changing.
type Event struct {
	// ID is the event log's id (0 when the event was not logged); for
	// track.* events, the id of the tracked object's stored event, the
	// same from start to end.
	ID       int64     `json:"id,omitempty"`
	Type     string    `json:"type"`
	Pipeline string    `json:"pipeline"`
	Time     time.Time `json:"time"` // scene time of the frame
	Frame    uint64    `json:"frame"`
	Zone     string    `json:"zone,omitempty"`
	Class    string    `json:"class,omitempty"`
	TrackID  int64     `json:"trackId,omitempty"`
	// Score and Box are the detection's; for track.* events, the object's
	// best so far.
	Score float32 `json:"score,omitempty"`
	Box   Box     `json:"box"`
	// Width and Height are the frame size the box refers to.
	Width  int `json:"width"`
	Height int `json:"height"`
	// Count and Previous are a zone's count of Class (count.changed).
	Count    int `json:"count,omitempty"`
	Previous int `json:"previous,omitempty"`
	// Dwell is how long the object was in the zone or in view (zone.leave,
	// zone.loiter, object.leave).
	Dwell time.Duration `json:"dwell,omitempty"`
	// Snapshot is the annotated JPEG's path relative to the snapshot dir:
	// for track.* events (and the raw events of the same object) the
	// object's best frame, replaced as it improves.
	Snapshot string `json:"snapshot,omitempty"`
	// EventID is, on a raw event of a tracked object, the ID of that
	// object's track.* event.
	EventID int64 `json:"eventId,omitempty"`
	// Start and End bound a tracked object's time in view (scene time;
	// End is zero while it is in view); Zones are the zones it entered, in
	// order. Set on track.* events.
	Start time.Time `json:"start,omitzero"`
	End   time.Time `json:"end,omitzero"`
	Zones []string  `json:"zones,omitempty"`
	// Model is the version of the model that produced the detection.
	Model string `json:"model,omitempty"`
	// Source is the new state of the source (type source.state, sent to
	// subscribers only).
	Source *source.State `json:"source,omitempty"`
	// Captured is when the frame was read (wall clock), for latency.
	Captured time.Time `json:"captured,omitzero"` // not kept by the event log

	jpeg []byte // the annotated frame, when an action wants a snapshot
	// best marks a track.* event whose frame holds the object's new best
	// detection (its snapshot is taken from it).
	best bool
}

// SourceState is the type of the events that tell subscribers a
// pipeline's source changed state; they are not logged nor acted on.
const SourceState = "source.state"

// wants reports whether a filter (types, zones, classes; empty = all)
// takes e. A track.* event is in the zones it entered.
func wants(types, zones, classes []string, e *Event) bool {
	inZone := len(zones) == 0 || (e.Zone != "" && matchAny(zones, e.Zone))
	for _, z := range e.Zones {
		inZone = inZone || matchAny(zones, z)
	}
	return matchAny(types, e.Type) && inZone && matchAny(classes, e.Class)
}

// matchAny reports whether s is in list; an empty list matches anything.
func matchAny(list []string, s string) bool { return len(list) == 0 || slices.Contains(list, s) }
