package pipeline

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestTrackedObjectEvents runs the pan video (three people standing, two
// of them in the left zone) and checks the events a Frigate user expects:
// one stored event per tracked object, with its start, end, label, best
// score and box, the zones it entered and one best snapshot, updated at
// most once a second of scene time; raw events linking to it; actions that
// by default take one track.start and one track.end per object; a raw
// stream for the action that asks for it; a cooldown that limits an
// action.
func TestTrackedObjectEvents(t *testing.T) {
	var (
		mu   sync.Mutex
		hits = map[string][]Event{} // webhook path -> events
	)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var e Event
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &e); err != nil {
			t.Errorf("webhook got %s: %v", b, err)
		}
		mu.Lock()
		hits[r.URL.Path] = append(hits[r.URL.Path], e)
		mu.Unlock()
	}))
	defer hook.Close()

	spec := panSpec(t, "objects")
	spec.Tracker = TrackerSpec{MinFrames: 2}
	spec.Actions = []ActionSpec{
		{Type: "snapshot"},
		{Type: "webhook", Name: "default", URL: hook.URL + "/default"},
		{Type: "webhook", Name: "raw", URL: hook.URL + "/raw", On: []string{ObjectEnter, ZoneEnter}},
		{Type: "webhook", Name: "calm", URL: hook.URL + "/calm", On: []string{ObjectEnter}, Cooldown: time.Hour},
	}
	e := newTestEngine(t, []Spec{spec}, nil)
	results, cancelResults, err := e.Results("objects", 1000)
	if err != nil {
		t.Fatal(err)
	}
	defer cancelResults()
	sub := e.Subscribe(4000)
	defer sub.Cancel()
	stop := run(t, e)
	waitFor(t, 60*time.Second, "the video to end", func() bool {
		s, _ := e.PipelineStats("objects")
		return s.Source.Phase == "ended" && s.FramesOut == s.FramesIn && s.FramesIn > 0
	})
	stop() // the objects still in view end here

	// The best score a track had on any frame.
	maxScore := map[int64]float32{}
	for r := range drain(results) {
		for _, o := range r.Objects {
			if o.TrackID != 0 {
				maxScore[o.TrackID] = max(maxScore[o.TrackID], o.Score)
			}
		}
	}

	byTrack := map[int64][]Event{}
	var raw []Event
	for ev := range drainEvents(sub) {
		switch {
		case isTrackEvent(ev.Type):
			byTrack[ev.TrackID] = append(byTrack[ev.TrackID], ev)
		case ev.Type != SourceState:
			raw = append(raw, ev)
		}
	}
	if len(byTrack) < 3 {
		t.Fatalf("%d tracked objects, want one per person (3+)", len(byTrack))
	}
	stored, err := e.EventLog().QueryTracks(t.Context(), TrackQuery{Pipeline: "objects"})
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != len(byTrack) {
		t.Errorf("%d stored events for %d tracked objects, want one each", len(stored), len(byTrack))
	}
	storedByID := map[int64]Event{}
	for _, s := range stored {
		storedByID[s.ID] = s
	}
	eventOf := map[int64]int64{}
	inLeft := 0
	for id, evs := range byTrack {
		first, last := evs[0], evs[len(evs)-1]
		if first.Type != TrackStart || last.Type != TrackEnd {
			t.Errorf("track #%d: events %v, want track.start first and track.end last", id, types(evs))
			continue
		}
		for i, ev := range evs {
			if ev.ID == 0 || ev.ID != first.ID || ev.EventID != first.ID {
				t.Errorf("track #%d: %s has id %d / event id %d, want %d throughout", id, ev.Type, ev.ID, ev.EventID, first.ID)
			}
			if i > 0 && ev.Type == TrackUpdate && evs[i-1].Type != TrackStart && ev.Time.Sub(evs[i-1].Time) < trackUpdateEvery {
				t.Errorf("track #%d: updates %s apart, want at most one a second", id, ev.Time.Sub(evs[i-1].Time))
			}
			if i > 0 && ev.Score < evs[i-1].Score {
				t.Errorf("track #%d: best score fell from %.3f to %.3f", id, evs[i-1].Score, ev.Score)
			}
		}
		eventOf[id] = first.ID
		s, ok := storedByID[first.ID]
		if !ok {
			t.Errorf("track #%d: stored event %d not found", id, first.ID)
			continue
		}
		if s.Class != "person" || s.TrackID != id || s.End.IsZero() || !s.End.After(s.Start) || s.Start.UnixMilli() != first.Start.UnixMilli() {
			t.Errorf("track #%d: stored %+v, want a person with a start before its end", id, s)
		}
		if s.Score != last.Score || s.Score < first.Score || s.Score > maxScore[id] {
			t.Errorf("track #%d: stored best score %.3f (start %.3f, end event %.3f, best seen %.3f)", id, s.Score, first.Score, last.Score, maxScore[id])
		}
		if slices.Contains(s.Zones, "left") {
			inLeft++
			if cx, _ := s.Box.Center(); cx >= 480 {
				t.Errorf("track #%d entered the left zone but its best box %v is in the right half", id, s.Box)
			}
		}
		if s.Snapshot == "" {
			t.Errorf("track #%d has no snapshot", id)
			continue
		}
		p, _ := e.EventLog().SnapshotPath(s.Snapshot)
		checkBoxDrawn(t, p, s.Box)
	}
	if inLeft < 2 {
		t.Errorf("%d objects entered the left zone, want 2", inLeft)
	}
	files, _ := filepath.Glob(filepath.Join(e.EventLog().SnapshotDir(), "objects", "*", "*.jpg"))
	if len(files) != len(byTrack) {
		t.Errorf("%d snapshot files for %d objects, want one each", len(files), len(byTrack))
	}
	var total int64
	for _, f := range files {
		fi, _ := os.Stat(f)
		total += fi.Size()
	}
	if got := e.EventLog().SnapshotBytes(); got != total {
		t.Errorf("the log counts %d snapshot bytes, the files take %d", got, total)
	}

	// Raw events name their object's event; the log has them too.
	for _, r := range raw {
		if r.TrackID != 0 && r.EventID != eventOf[r.TrackID] {
			t.Errorf("raw %s of track #%d links to event %d, want %d", r.Type, r.TrackID, r.EventID, eventOf[r.TrackID])
		}
	}
	logged, _ := e.EventLog().Query(t.Context(), Query{Pipeline: "objects", Type: ObjectEnter})
	for _, r := range logged {
		if r.EventID != eventOf[r.TrackID] || r.Snapshot != storedByID[r.EventID].Snapshot {
			t.Errorf("logged object.enter of track #%d: event %d snapshot %q, want event %d and its snapshot", r.TrackID, r.EventID, r.Snapshot, eventOf[r.TrackID])
		}
	}

	// Actions.
	waitFor(t, 10*time.Second, "the webhooks", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(hits["/default"]) >= 2*len(byTrack) && len(hits["/calm"]) >= 1
	})
	mu.Lock()
	defer mu.Unlock()
	count := func(evs []Event) map[string]int {
		n := map[string]int{}
		for _, ev := range evs {
			n[ev.Type]++
		}
		return n
	}
	if n := count(hits["/default"]); len(n) != 2 || n[TrackStart] != len(byTrack) || n[TrackEnd] != len(byTrack) {
		t.Errorf("an action without on got %v, want one track.start and one track.end per object (%d)", n, len(byTrack))
	}
	rawWant := count(raw)
	if n := count(hits["/raw"]); n[ObjectEnter] != rawWant[ObjectEnter] || n[ZoneEnter] != rawWant[ZoneEnter] || len(n) != 2 {
		t.Errorf("an action on object.enter and zone.enter got %v, the stream had %v", n, rawWant)
	}
	st, _ := e.PipelineStats("objects")
	for _, a := range st.Actions {
		if a.Name == "calm" && (a.Delivered != 1 || a.Limited != uint64(rawWant[ObjectEnter]-1)) {
			t.Errorf("an action with a 1 h cooldown: %+v, want 1 delivered and %d limited", a, rawWant[ObjectEnter]-1)
		}
	}
	if len(hits["/calm"]) != 1 {
		t.Errorf("the cooldown let %d events through, want 1", len(hits["/calm"]))
	}
}

func types(evs []Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

// TestBusySceneEvents (LEDGE_SOAK=1, 90 s): the pan video looping in real
// time, as a camera would show it, with a zone: how many raw events and how
// many tracked objects' events a minute and a half makes.
func TestBusySceneEvents(t *testing.T) {
	if os.Getenv("LEDGE_SOAK") == "" {
		t.Skip("a 90 s soak: set LEDGE_SOAK=1")
	}
	spec := panSpec(t, "busy")
	spec.Source.Loop, spec.Source.Realtime = true, true
	e := newTestEngine(t, []Spec{spec}, nil)
	sub := e.Subscribe(100000)
	defer sub.Cancel()
	stop := run(t, e)
	time.Sleep(90 * time.Second)
	stop()
	n := map[string]int{}
	for ev := range drainEvents(sub) {
		n[ev.Type]++
	}
	raw := n[ObjectEnter] + n[ObjectLeave] + n[ZoneEnter] + n[ZoneLeave] + n[ZoneLoiter] + n[CountChanged]
	t.Logf("90 s: %d raw events (%v), %d tracked objects (%d updates)", raw, n, n[TrackStart], n[TrackUpdate])
	if n[TrackStart] == 0 || n[TrackStart] != n[TrackEnd] || 4*n[TrackStart] > raw {
		t.Errorf("%d objects (%d ended) against %d raw events: want every object ended and far fewer objects than raw events", n[TrackStart], n[TrackEnd], raw)
	}
}
