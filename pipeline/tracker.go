package pipeline

import (
	"cmp"
	"math"
	"slices"
	"time"
)

// Tracker defaults.
const (
	DefaultTrackIoU       = 0.3
	DefaultTrackDistance  = 0.5
	DefaultTrackMinFrames = 3
	DefaultTrackTimeout   = time.Second
)

// A tracked object's event is updated at most once per trackUpdateEvery
// (scene time): its best detection is taken again then when the current
// one scores at least bestMargin more, and new zones are reported.
const (
	trackUpdateEvery = time.Second
	bestMargin       = 0.02
)

// zone is a ZoneSpec ready to test points.
type zone struct {
	name    string
	poly    Polygon
	classes []string
	loiter  time.Duration
}

func buildZones(specs []ZoneSpec) []zone {
	out := make([]zone, len(specs))
	for i, z := range specs {
		pg := make(Polygon, len(z.Polygon))
		for j, p := range z.Polygon {
			pg[j] = Point{p[0], p[1]}
		}
		out[i] = zone{name: z.Name, poly: pg, classes: z.Classes, loiter: z.Loiter}
	}
	return out
}

// track is one object followed over frames.
type track struct {
	id        int64
	classID   int
	label     string
	box       Box
	score     float32
	vx, vy    float32 // centre velocity, pixels per second
	hits      int
	confirmed bool
	first     time.Time
	last      time.Time
	zones     map[string]time.Time // zone -> entered
	loitered  map[string]bool
	// The object's event: its best detection, the zones it entered (in
	// order), when it was last reported and whether it changed since.
	best    float32
	bestBox Box
	visited []string
	updated time.Time
	dirty   bool
}

// tracker follows objects across frames with greedy IoU matching (on
// boxes moved by each track's velocity) and a centre-distance fallback,
// and turns what it sees into events. It is used by one goroutine.
type tracker struct {
	iou      float32
	dist     float32
	minHits  int
	timeout  time.Duration
	zones    []zone
	tracks   []*track
	nextID   int64
	counts   map[[2]string]int // (zone, class) -> confirmed tracks inside
	lastTime time.Time
	w, h     int // the last frame's size
}

func newTracker(s TrackerSpec, zones []zone) *tracker {
	t := &tracker{iou: float32(s.IoU), dist: float32(s.Distance), minHits: s.MinFrames, timeout: s.Timeout,
		zones: zones, counts: map[[2]string]int{}}
	if t.iou == 0 {
		t.iou = DefaultTrackIoU
	}
	if t.dist == 0 {
		t.dist = DefaultTrackDistance
	}
	if t.minHits == 0 {
		t.minHits = DefaultTrackMinFrames
	}
	if t.timeout == 0 {
		t.timeout = DefaultTrackTimeout
	}
	return t
}

// update matches objs (detections of one frame at scene time now, frame w
// x h) to tracks, sets their TrackID (confirmed tracks only), and returns
// the events, filled in except for Pipeline, Frame and the like.
func (tk *tracker) update(now time.Time, objs []Object, w, h int) []Event {
	dt := tk.advance(now, w, h)
	assign, used := tk.match(tk.predict(dt), objs)
	events := tk.follow(nil, now, dt, objs, assign)
	events = tk.spawn(events, now, objs, used)
	return tk.countEvents(events, w, h)
}

// advance moves the tracker's clock to now (frames w x h) and returns the
// seconds since the last update (0 for the first).
func (tk *tracker) advance(now time.Time, w, h int) float32 {
	dt := float32(0)
	if !tk.lastTime.IsZero() {
		dt = float32(now.Sub(tk.lastTime).Seconds())
	}
	tk.lastTime, tk.w, tk.h = now, w, h
	return dt
}

// predict is where each track's box should be dt seconds on, moved by its
// velocity.
func (tk *tracker) predict(dt float32) []Box {
	pred := make([]Box, len(tk.tracks))
	for i, t := range tk.tracks {
		pred[i] = t.box.Shift(t.vx*dt, t.vy*dt)
	}
	return pred
}

// pair is a candidate match of track t and detection d.
type pair struct {
	t, d  int
	score float32
}

// match assigns detections to tracks of the same class, greedily: by
// overlap with the predicted boxes (highest first), then, for what overlap
// did not match (fast or jumpy boxes), by centre distance (nearest first).
// assign[i] is track i's detection (-1: none); used[j] tells whether
// detection j went to a track.
func (tk *tracker) match(pred []Box, objs []Object) (assign []int, used []bool) {
	assign = make([]int, len(tk.tracks))
	for i := range assign {
		assign[i] = -1
	}
	used = make([]bool, len(objs))
	take := func(ps []pair) {
		for _, p := range ps {
			if assign[p.t] < 0 && !used[p.d] {
				assign[p.t], used[p.d] = p.d, true
			}
		}
	}
	take(tk.overlapPairs(pred, objs))
	take(tk.distancePairs(pred, objs, assign, used))
	return assign, used
}

// overlapPairs are the track-detection pairs that overlap enough, best
// first.
func (tk *tracker) overlapPairs(pred []Box, objs []Object) []pair {
	var pairs []pair
	for i, t := range tk.tracks {
		for j, o := range objs {
			if o.ClassID == t.classID {
				if iou := pred[i].IoU(o.Box); iou >= tk.iou {
					pairs = append(pairs, pair{i, j, iou})
				}
			}
		}
	}
	slices.SortFunc(pairs, func(a, b pair) int { return cmp.Compare(b.score, a.score) })
	return pairs
}

// distancePairs are the pairs of unmatched tracks and detections whose
// centres are close enough for the track's size, nearest first.
func (tk *tracker) distancePairs(pred []Box, objs []Object, assign []int, used []bool) []pair {
	var pairs []pair
	for i, t := range tk.tracks {
		if assign[i] >= 0 {
			continue
		}
		size := max(pred[i].Width(), pred[i].Height())
		px, py := pred[i].Center()
		for j, o := range objs {
			if used[j] || o.ClassID != t.classID {
				continue
			}
			ox, oy := o.Box.Center()
			if d := hypot(ox-px, oy-py); d <= tk.dist*size {
				pairs = append(pairs, pair{i, j, d})
			}
		}
	}
	slices.SortFunc(pairs, func(a, b pair) int { return cmp.Compare(a.score, b.score) })
	return pairs
}

// follow moves each matched track to its detection (and gives the
// detection its id once confirmed), and drops the tracks not seen for
// longer than the timeout, appending the events of both.
func (tk *tracker) follow(events []Event, now time.Time, dt float32, objs []Object, assign []int) []Event {
	kept := tk.tracks[:0]
	for i, t := range tk.tracks {
		d := assign[i]
		if d < 0 {
			if now.Sub(t.last) > tk.timeout {
				events = tk.lost(events, t)
				continue
			}
			kept = append(kept, t)
			continue
		}
		o := &objs[d]
		t.hit(o, now, dt)
		switch {
		case !t.confirmed && t.hits >= tk.minHits:
			o.TrackID = t.id
			events = tk.confirm(events, t, now)
		case t.confirmed:
			o.TrackID = t.id
			events = tk.zoneEvents(events, t, now)
			events = t.update(events, now, tk.w, tk.h)
		}
		kept = append(kept, t)
	}
	tk.tracks = kept
	return events
}

// hit moves t to detection o, seen at now, dt seconds after the last
// frame, and updates its velocity.
func (t *track) hit(o *Object, now time.Time, dt float32) {
	if dt > 0 {
		ocx, ocy := o.Box.Center()
		tcx, tcy := t.box.Center()
		t.vx = 0.5*t.vx + 0.5*(ocx-tcx)/dt
		t.vy = 0.5*t.vy + 0.5*(ocy-tcy)/dt
	}
	t.box, t.score, t.last = o.Box, o.Score, now
	t.hits++
}

// lost appends the events of a confirmed track that was lost: it leaves
// its zones and the frame, and its tracked object ends.
func (tk *tracker) lost(events []Event, t *track) []Event {
	if !t.confirmed {
		return events
	}
	for _, z := range tk.zones {
		if entered, ok := t.zones[z.name]; ok {
			e := tk.ev(ZoneLeave, t)
			e.Zone, e.Dwell = z.name, t.last.Sub(entered)
			events = append(events, e)
		}
	}
	e := tk.ev(ObjectLeave, t)
	e.Dwell = t.last.Sub(t.first)
	return append(events, e, t.ended(tk.w, tk.h))
}

// spawn starts a track for each detection no track took (confirmed at
// once when one frame confirms).
func (tk *tracker) spawn(events []Event, now time.Time, objs []Object, used []bool) []Event {
	for j := range objs {
		if used[j] {
			continue
		}
		tk.nextID++
		o := objs[j]
		t := &track{id: tk.nextID, classID: o.ClassID, label: o.Label, box: o.Box, score: o.Score, hits: 1,
			first: now, last: now, zones: map[string]time.Time{}, loitered: map[string]bool{}}
		if tk.minHits <= 1 {
			objs[j].TrackID = t.id
			events = tk.confirm(events, t, now)
		}
		tk.tracks = append(tk.tracks, t)
	}
	return events
}

// ev is a raw event of t in the current frame.
func (tk *tracker) ev(ty string, t *track) Event {
	return Event{Type: ty, Class: t.label, TrackID: t.id, Score: t.score, Box: t.box, Width: tk.w, Height: tk.h}
}

// confirm makes t a confirmed object and appends its track.start (with
// its detection as the best so far, the frame its first snapshot comes
// from, and the zones it is in), object.enter and zone.enter events, in
// that order: the raw events of an object follow its track.start.
func (tk *tracker) confirm(events []Event, t *track, now time.Time) []Event {
	t.confirmed = true
	t.best, t.bestBox, t.updated = t.score, t.box, now
	zev := tk.zoneEvents(nil, t, now)
	t.dirty = false
	start := t.event(TrackStart, tk.w, tk.h)
	start.best = true
	events = append(events, start, tk.ev(ObjectEnter, t))
	return append(events, zev...)
}

// update appends t's track.update when one is due: at most once per
// trackUpdateEvery, when its detection now beats its best by bestMargin (the
// event then marks this frame as the best) or it entered a zone since the
// last one.
func (t *track) update(events []Event, now time.Time, w, h int) []Event {
	if now.Sub(t.updated) < trackUpdateEvery {
		return events
	}
	better := t.score >= t.best+bestMargin
	if better {
		t.best, t.bestBox = t.score, t.box
	}
	if !better && !t.dirty {
		return events
	}
	t.updated, t.dirty = now, false
	e := t.event(TrackUpdate, w, h)
	e.Dwell = now.Sub(t.first)
	e.best = better
	return append(events, e)
}

// ended is t's track.end (it was lost, or the pipeline stops).
func (t *track) ended(w, h int) Event {
	e := t.event(TrackEnd, w, h)
	e.End, e.Dwell = t.last, t.last.Sub(t.first)
	return e
}

func (t *track) event(ty string, w, h int) Event {
	return Event{Type: ty, Class: t.label, TrackID: t.id, Score: t.best, Box: t.bestBox, Width: w, Height: h,
		Start: t.first, Zones: slices.Clone(t.visited)}
}

// finish ends every confirmed track (the pipeline stops) and returns their
// track.end events.
func (tk *tracker) finish() []Event {
	var events []Event
	for _, t := range tk.tracks {
		if t.confirmed {
			events = append(events, t.ended(tk.w, tk.h))
		}
	}
	tk.tracks = nil
	return events
}

// zoneEvents appends t's zone.enter, zone.leave and zone.loiter events of
// this frame.
func (tk *tracker) zoneEvents(events []Event, t *track, now time.Time) []Event {
	if len(tk.zones) == 0 {
		return events
	}
	p := anchor(t.box, tk.w, tk.h)
	for _, z := range tk.zones {
		inside := matchAny(z.classes, t.label) && z.poly.Contains(p)
		entered, was := t.zones[z.name]
		switch {
		case inside && !was:
			t.zones[z.name] = now
			if !slices.Contains(t.visited, z.name) {
				t.visited = append(t.visited, z.name)
				t.dirty = true
			}
			e := tk.ev(ZoneEnter, t)
			e.Zone = z.name
			events = append(events, e)
		case !inside && was:
			delete(t.zones, z.name)
			delete(t.loitered, z.name)
			e := tk.ev(ZoneLeave, t)
			e.Zone, e.Dwell = z.name, now.Sub(entered)
			events = append(events, e)
		case inside && was && z.loiter > 0 && !t.loitered[z.name] && now.Sub(entered) >= z.loiter:
			t.loitered[z.name] = true
			e := tk.ev(ZoneLoiter, t)
			e.Zone, e.Dwell = z.name, now.Sub(entered)
			events = append(events, e)
		}
	}
	return events
}

// countEvents appends count.changed for each (zone, class) whose number of
// confirmed tracks inside changed.
func (tk *tracker) countEvents(events []Event, w, h int) []Event {
	if len(tk.zones) == 0 {
		return events
	}
	now := map[[2]string]int{}
	for _, t := range tk.tracks {
		for z := range t.zones {
			now[[2]string{z, t.label}]++
		}
	}
	var keys [][2]string
	for k, n := range now {
		if tk.counts[k] != n {
			keys = append(keys, k)
		}
	}
	for k := range tk.counts {
		if _, ok := now[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b [2]string) int { return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1])) })
	for _, k := range keys {
		events = append(events, Event{Type: CountChanged, Zone: k[0], Class: k[1], Count: now[k], Previous: tk.counts[k], Width: w, Height: h})
	}
	tk.counts = now
	return events
}

// confirmed returns the confirmed tracks' current boxes, for drawing.
func (tk *tracker) confirmedTracks() []Object {
	var out []Object
	for _, t := range tk.tracks {
		if t.confirmed {
			out = append(out, Object{Detection: Detection{Box: t.box, ClassID: t.classID, Label: t.label, Score: t.score}, TrackID: t.id})
		}
	}
	return out
}

func hypot(x, y float32) float32 { return float32(math.Hypot(float64(x), float64(y))) }
