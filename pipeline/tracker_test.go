package pipeline

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// person is a 40x100 detection of a person centred on (cx, cy).
func person(cx, cy float32) Object {
	return Object{Detection: Detection{Box: Box{X1: cx - 20, Y1: cy - 50, X2: cx + 20, Y2: cy + 50}, Label: "person", Score: 0.9}}
}

// frames is a scene at 10 fps: frame i holds the detections f(i) returns
// (nil: none).
type frames struct {
	n int
	f func(i int) []Object
}

// TestTrackerScenes feeds the tracker synthetic detections (640x480
// frames, 10 a second, default tracker settings: three frames confirm an
// object, one second without it loses it) and checks the events of each
// frame, the track ids given to each detection, and the track.end events
// when the pipeline stops.
func TestTrackerScenes(t *testing.T) {
	right := ZoneSpec{Name: "right", Polygon: [][]float64{{0.5, 0}, {1, 0}, {1, 1}, {0.5, 1}}}
	left := ZoneSpec{Name: "left", Polygon: [][]float64{{0, 0}, {0.5, 0}, {0.5, 1}, {0, 1}}}
	for _, tc := range []struct {
		name  string
		zones []ZoneSpec
		scene frames
		want  []string  // "frame type #track [zone] [count] [dwell]"
		ids   [][]int64 // per frame, the track id of each detection (nil: not checked)
	}{{
		name:  "a flicker is not an object",
		scene: frames{5, func(i int) []Object { return when(i < 2, person(100, 200)) }},
		ids:   [][]int64{{0}, {0}, {}, {}, {}},
	}, {
		name: "occlusion: the object keeps its track",
		scene: frames{12, func(i int) []Object {
			return when(i < 5 || i > 8, person(float32(100+5*i), 200)) // hidden in frames 5-8 (400 ms)
		}},
		want: []string{"2 track.start #1", "2 object.enter #1", "stop track.end #1 1.1s"},
		ids:  [][]int64{{0}, {0}, {1}, {1}, {1}, {}, {}, {}, {}, {1}, {1}, {1}},
	}, {
		name: "crossing: each keeps its id where their boxes swap places",
		scene: frames{11, func(i int) []Object {
			a, b := person(float32(100+40*i), 200), person(float32(540-40*i), 200)
			if i%2 == 1 {
				return []Object{b, a} // the detector's order means nothing
			}
			return []Object{a, b}
		}},
		want: []string{"2 track.start #1", "2 object.enter #1", "2 track.start #2", "2 object.enter #2",
			"stop track.end #1 1s", "stop track.end #2 1s"},
		ids: [][]int64{{0, 0}, {0, 0}, {1, 2}, {2, 1}, {1, 2}, {2, 1}, {1, 2}, {2, 1}, {1, 2}, {2, 1}, {1, 2}},
	}, {
		name:  "a zone edge: on the edge is inside, a step back is out",
		zones: []ZoneSpec{right},
		scene: frames{13, func(i int) []Object {
			x := []float32{260, 280, 300, 320, 340, 360, 380, 360, 340, 320, 300, 280, 260}[i] // the edge is x = 320
			return []Object{person(x, 200)}
		}},
		want: []string{"2 track.start #1", "2 object.enter #1",
			"3 zone.enter #1 right", "3 count.changed right person 0->1",
			"10 zone.leave #1 right 700ms", "10 count.changed right person 1->0",
			"12 track.update #1 [right] 1.2s", "stop track.end #1 [right] 1.2s"},
	}, {
		name:  "a lost track ends, and what comes back is a new object",
		zones: []ZoneSpec{left, right},
		scene: frames{19, func(i int) []Object { return when(i < 5 || i > 15, person(100, 200)) }},
		want: []string{"2 track.start #1 [left]", "2 object.enter #1", "2 zone.enter #1 left", "2 count.changed left person 0->1",
			"15 zone.leave #1 left 200ms", "15 object.leave #1 400ms", "15 track.end #1 [left] 400ms",
			"15 count.changed left person 1->0",
			"18 track.start #2 [left]", "18 object.enter #2", "18 zone.enter #2 left", "18 count.changed left person 0->1",
			"stop track.end #2 [left] 200ms"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			tk := newTracker(TrackerSpec{}, buildZones(tc.zones))
			t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
			var got []string
			for i := range tc.scene.n {
				objs := tc.scene.f(i)
				for _, e := range tk.update(t0.Add(time.Duration(i)*100*time.Millisecond), objs, 640, 480) {
					got = append(got, fmt.Sprint(i, " ", eventLine(e)))
				}
				if tc.ids != nil {
					ids := []int64{}
					for _, o := range objs {
						ids = append(ids, o.TrackID)
					}
					if !slices.Equal(ids, tc.ids[i]) {
						t.Errorf("frame %d: track ids %v, want %v", i, ids, tc.ids[i])
					}
				}
			}
			for _, e := range tk.finish() {
				got = append(got, "stop "+eventLine(e))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("events:\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

// when is objs if cond, else none.
func when(cond bool, objs ...Object) []Object {
	if !cond {
		return nil
	}
	return objs
}

// eventLine is the part of e a scene checks.
func eventLine(e Event) string {
	var b strings.Builder
	b.WriteString(e.Type)
	if e.Type == CountChanged {
		fmt.Fprintf(&b, " %s %s %d->%d", e.Zone, e.Class, e.Previous, e.Count)
		return b.String()
	}
	fmt.Fprintf(&b, " #%d", e.TrackID)
	if e.Zone != "" {
		b.WriteString(" " + e.Zone)
	}
	if len(e.Zones) > 0 {
		fmt.Fprintf(&b, " %v", e.Zones)
	}
	if e.Dwell > 0 {
		b.WriteString(" " + e.Dwell.String())
	}
	return b.String()
}
