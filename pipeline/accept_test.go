package pipeline

import (
	"maps"
	"math"
	"slices"
	"testing"
	"time"

	"ledge/internal/testenv"
)

// The people in bus.jpg (810x1080 pixels), as YOLOX-nano and FastestDet
// find them in the photo; the last one is cut off at the photo's left edge.
var busPeople = []Box{
	{X1: 50, Y1: 395, X2: 216, Y2: 898},
	{X1: 220, Y1: 402, X2: 347, Y2: 855},
	{X1: 685, Y1: 454, X2: 810, Y2: 874},
	{X1: 0, Y1: 564, X2: 67, Y2: 850},
}

// panBox is where person p of bus.jpg is in frame n of panVideo: the photo
// is scaled by 2/3 and slid to x = 100 + 80 sin(n/12).
func panBox(p Box, n int) Box {
	off := float32(math.Floor(100 + 80*math.Sin(float64(n)/12)))
	const s = 540.0 / 810
	return Box{X1: p.X1*s + off, Y1: p.Y1 * s, X2: p.X2*s + off, Y2: p.Y2 * s}
}

func panSpec(t testing.TB, name string) Spec {
	return Spec{
		Name:   name,
		Source: sourceSpec(video(t, panVideo)),
		Detect: &DetectSpec{Model: testenv.Model(t, "yolox_nano.onnx"), Threshold: 0.3, Classes: []string{"person"}},
		Zones: []ZoneSpec{{Name: "left", Polygon: [][]float64{{0, 0}, {0.5, 0}, {0.5, 1}, {0, 1}},
			Classes: []string{"person"}}},
	}
}

// TestPanVideoTracksAndZones runs the pan video through YOLOX-nano: person
// events come out, each person the detector sees keeps one track id over
// at least 80% of the frames where it is seen, and the zone over the left
// half reports the people in it and not the one on the right.
func TestPanVideoTracksAndZones(t *testing.T) {
	spec := panSpec(t, "pan")
	e := newTestEngine(t, []Spec{spec}, nil)
	results, cancelResults, err := e.Results("pan", 1000)
	if err != nil {
		t.Fatal(err)
	}
	defer cancelResults()
	sub := e.Subscribe(1000)
	defer sub.Cancel()
	stop := run(t, e)
	waitFor(t, 60*time.Second, "the video to end", func() bool {
		s, _ := e.PipelineStats("pan")
		return s.Source.Phase == "ended" && s.FramesOut == s.FramesIn && s.FramesIn > 0
	})
	stop()
	st, _ := e.PipelineStats("pan")
	if st.FramesIn != 125 || st.Dropped != 0 {
		t.Errorf("frames in %d, dropped %d; want all 125 frames of the file, none dropped", st.FramesIn, st.Dropped)
	}

	// Track ids per person.
	seen := make([]int, len(busPeople))
	ids := make([]map[int64]int, len(busPeople))
	for i := range ids {
		ids[i] = map[int64]int{}
	}
	frames := 0
	for r := range drain(results) {
		frames++
		if !r.Detected {
			t.Errorf("frame %d was not detected", r.Frame)
		}
		if r.Model == "" {
			t.Errorf("frame %d carries no model version", r.Frame)
		}
		for p, gt := range busPeople {
			want := panBox(gt, int(r.Frame-1))
			best, bestIoU := Object{}, float32(0.5)
			for _, o := range r.Objects {
				if iou := o.Box.IoU(want); iou >= bestIoU {
					best, bestIoU = o, iou
				}
			}
			if best.Label == "" {
				continue
			}
			seen[p]++
			ids[p][best.TrackID]++
		}
	}
	if frames != 125 {
		t.Errorf("%d results, want 125", frames)
	}
	personTrack := make([]int64, len(busPeople))
	tracked := 0
	for p := range busPeople {
		var dom int64
		for id, n := range ids[p] {
			if id != 0 && n > ids[p][dom] {
				dom = id
			}
		}
		personTrack[p] = dom
		share := float64(ids[p][dom]) / float64(max(seen[p], 1))
		t.Logf("person %d: seen in %d/%d frames, track #%d in %.0f%% of them (ids %v)", p, seen[p], frames, dom, 100*share, ids[p])
		if seen[p] < frames/2 {
			continue // YOLOX-nano rarely sees the person cut off at the photo's edge
		}
		tracked++
		if share < 0.8 {
			t.Errorf("person %d kept track #%d in only %.0f%% of the %d frames it was seen in", p, dom, 100*share, seen[p])
		}
	}
	if tracked < 3 {
		t.Errorf("only %d people seen in most frames; want at least 3", tracked)
	}

	// Events.
	var enters, zoneEnters []Event
	for ev := range drainEvents(sub) {
		switch ev.Type {
		case ObjectEnter:
			enters = append(enters, ev)
		case ZoneEnter:
			zoneEnters = append(zoneEnters, ev)
		}
		if ev.Type != SourceState && ev.Class != "person" {
			t.Errorf("event %s for class %q: the detector keeps only persons", ev.Type, ev.Class)
		}
	}
	if len(enters) < 3 {
		t.Errorf("%d object.enter events, want one per person (3+)", len(enters))
	}
	inZone := map[int64]bool{}
	for _, ev := range zoneEnters {
		inZone[ev.TrackID] = true
		if ev.Zone != "left" {
			t.Errorf("zone.enter for zone %q", ev.Zone)
		}
		if cx, _ := ev.Box.Center(); cx >= 480 {
			t.Errorf("zone.enter for track #%d whose box %v is in the right half", ev.TrackID, ev.Box)
		}
	}
	for _, p := range []int{0, 1} {
		if !inZone[personTrack[p]] {
			t.Errorf("no zone.enter for person %d (track #%d) standing in the left half; zone.enter tracks: %v", p, personTrack[p], slices.Sorted(maps.Keys(inZone)))
		}
	}
	if inZone[personTrack[2]] {
		t.Errorf("zone.enter for person 2 (track #%d) who stays in the right half", personTrack[2])
	}
	// The event log has them.
	logged, err := e.EventLog().Query(t.Context(), Query{Pipeline: "pan", Type: ZoneEnter, Zone: "left", Class: "person"})
	if err != nil || len(logged) != len(zoneEnters) {
		t.Errorf("event log has %d zone.enter events (%v), the subscriber saw %d", len(logged), err, len(zoneEnters))
	}
}

func sourceSpec(path string) (s sourceSpecT) { s.URL = "file:" + path; return s }

func drain[T any](ch <-chan T) func(func(T) bool) {
	return func(yield func(T) bool) {
		for {
			select {
			case v, ok := <-ch:
				if !ok || !yield(v) {
					return
				}
			default:
				return
			}
		}
	}
}

func drainEvents(s *Subscription) func(func(Event) bool) { return drain(s.C) }

var _ = slices.Sort[[]int]
