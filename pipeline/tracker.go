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

type pair struct {
	t, d  int
	score float32
}

// update matches objs (detections of one frame at scene time now, frame w
// x h) to tracks, sets their TrackID (confirmed tracks only), and returns
// the events, filled in except for Pipeline, Frame and the like.
func (tk *tracker) update(now time.Time, objs []Object, w, h int) []Event {
	dt := float32(0)
	if !tk.lastTime.IsZero() {
		dt = float32(now.Sub(tk.lastTime).Seconds())
	}
	tk.lastTime = now
	pred := make([]Box, len(tk.tracks))
	for i, t := range tk.tracks {
		pred[i] = t.box.Shift(t.vx*dt, t.vy*dt)
	}
	tUsed := make([]bool, len(tk.tracks))
	dUsed := make([]bool, len(objs))
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
	assign := make([]int, len(tk.tracks))
	for i := range assign {
		assign[i] = -1
	}
	take := func(ps []pair) {
		for _, p := range ps {
			if !tUsed[p.t] && !dUsed[p.d] {
				tUsed[p.t], dUsed[p.d] = true, true
				assign[p.t] = p.d
			}
		}
	}
	take(pairs)
	// Centre distance for what overlap did not match (fast or jumpy boxes).
	pairs = pairs[:0]
	for i, t := range tk.tracks {
		if tUsed[i] {
			continue
		}
		size := max(pred[i].Width(), pred[i].Height())
		px, py := pred[i].Center()
		for j, o := range objs {
			if dUsed[j] || o.ClassID != t.classID {
				continue
			}
			ox, oy := o.Box.Center()
			d := hypot(ox-px, oy-py)
			if d <= tk.dist*size {
				pairs = append(pairs, pair{i, j, d})
			}
		}
	}
	slices.SortFunc(pairs, func(a, b pair) int { return cmp.Compare(a.score, b.score) })
	take(pairs)

	var events []Event
	ev := func(ty string, t *track) Event {
		return Event{Type: ty, Class: t.label, TrackID: t.id, Score: t.score, Box: t.box, Width: w, Height: h}
	}
	kept := tk.tracks[:0]
	for i, t := range tk.tracks {
		d := assign[i]
		if d < 0 {
			if now.Sub(t.last) > tk.timeout {
				if t.confirmed {
					for _, z := range tk.zones {
						if entered, ok := t.zones[z.name]; ok {
							e := ev(ZoneLeave, t)
							e.Zone, e.Dwell = z.name, t.last.Sub(entered)
							events = append(events, e)
						}
					}
					e := ev(ObjectLeave, t)
					e.Dwell = t.last.Sub(t.first)
					events = append(events, e)
				}
				continue // lost
			}
			kept = append(kept, t)
			continue
		}
		o := &objs[d]
		if dt > 0 {
			ocx, ocy := o.Box.Center()
			tcx, tcy := t.box.Center()
			t.vx = 0.5*t.vx + 0.5*(ocx-tcx)/dt
			t.vy = 0.5*t.vy + 0.5*(ocy-tcy)/dt
		}
		t.box, t.score, t.last = o.Box, o.Score, now
		t.hits++
		if !t.confirmed && t.hits >= tk.minHits {
			t.confirmed = true
			events = append(events, ev(ObjectEnter, t))
		}
		if t.confirmed {
			o.TrackID = t.id
			events = tk.zoneEvents(events, t, now, w, h, ev)
		}
		kept = append(kept, t)
	}
	tk.tracks = kept
	for j := range objs {
		if dUsed[j] {
			continue
		}
		tk.nextID++
		o := objs[j]
		t := &track{id: tk.nextID, classID: o.ClassID, label: o.Label, box: o.Box, score: o.Score, hits: 1,
			first: now, last: now, zones: map[string]time.Time{}, loitered: map[string]bool{}}
		if tk.minHits <= 1 {
			t.confirmed = true
			objs[j].TrackID = t.id
			events = append(events, ev(ObjectEnter, t))
			events = tk.zoneEvents(events, t, now, w, h, ev)
		}
		tk.tracks = append(tk.tracks, t)
	}
	return tk.countEvents(events, w, h)
}

func (tk *tracker) zoneEvents(events []Event, t *track, now time.Time, w, h int, ev func(string, *track) Event) []Event {
	if len(tk.zones) == 0 {
		return events
	}
	p := anchor(t.box, w, h)
	for _, z := range tk.zones {
		inside := matchAny(z.classes, t.label) && z.poly.Contains(p)
		entered, was := t.zones[z.name]
		switch {
		case inside && !was:
			t.zones[z.name] = now
			e := ev(ZoneEnter, t)
			e.Zone = z.name
			events = append(events, e)
		case !inside && was:
			delete(t.zones, z.name)
			delete(t.loitered, z.name)
			e := ev(ZoneLeave, t)
			e.Zone, e.Dwell = z.name, now.Sub(entered)
			events = append(events, e)
		case inside && was && z.loiter > 0 && !t.loitered[z.name] && now.Sub(entered) >= z.loiter:
			t.loitered[z.name] = true
			e := ev(ZoneLoiter, t)
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
			out = append(out, Object{Box: t.box, ClassID: t.classID, Label: t.label, Score: t.score, TrackID: t.id})
		}
	}
	return out
}

func hypot(x, y float32) float32 { return float32(math.Hypot(float64(x), float64(y))) }
