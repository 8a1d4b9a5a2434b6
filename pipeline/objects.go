package pipeline

import "context"

// A tracked object's events (track.start, track.update, track.end) go
// through the dispatcher like the others; this is what it does with them.

// objectRow is a tracked object's stored event, as the dispatcher knows
// it.
type objectRow struct {
	id       int64 // in the event log (0 without one)
	snapshot string
}

// dispatchTrack writes a track.* event's snapshot (when its frame is the
// object's new best) and its stored event, and gives e their names.
func (in *instance) dispatchTrack(ctx context.Context, e *Event) {
	o := in.objects[e.TrackID]
	if o == nil {
		o = &objectRow{}
		in.objects[e.TrackID] = o
	}
	if e.Type == TrackEnd {
		delete(in.objects, e.TrackID)
	}
	snapBytes := int64(-1)
	if in.snapshot != nil && e.jpeg != nil && in.snapshot.deliver(ctx, e) {
		snapBytes, o.snapshot = int64(len(e.jpeg)), e.Snapshot
	}
	e.Snapshot = o.snapshot
	if in.eng.evlog != nil && !in.spec.Events.NoLog {
		// A failure is logged by the event log, once per outage; the
		// object's next update tries again.
		if o.id == 0 {
			o.id, _ = in.eng.evlog.StartTrack(ctx, e, snapBytes)
		} else {
			in.eng.evlog.UpdateTrack(ctx, o.id, e, snapBytes)
		}
	}
	e.ID, e.EventID = o.id, o.id
}
