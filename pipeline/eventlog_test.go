package pipeline

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"ledge/internal/testenv"
)

// TestEventLogAgeRetentionAndQuery: events older than maxAge go with their
// snapshot files; queries filter by time, pipeline, class and zone, and
// page backwards.
func TestEventLogAgeRetentionAndQuery(t *testing.T) {
	dir := t.TempDir()
	l, err := OpenEventLog(t.Context(), testenv.DB(t), dir, EventLogConfig{MaxAge: time.Hour}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	add := func(age time.Duration, pipeline, class, zone, snap string) int64 {
		var n int64
		if snap != "" {
			os.MkdirAll(filepath.Join(dir, filepath.Dir(snap)), 0o750)
			os.WriteFile(filepath.Join(dir, snap), []byte("jpeg"), 0o640)
			n = 4
		}
		id, err := l.Insert(t.Context(), &Event{Type: ZoneEnter, Pipeline: pipeline, Class: class, Zone: zone, Time: now.Add(-age), Snapshot: snap}, n)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	add(3*time.Hour, "door", "person", "porch", "door/old.jpg")
	add(2*time.Hour, "yard", "car", "", "")
	recent := add(30*time.Minute, "door", "person", "porch", "door/new.jpg")
	add(10*time.Minute, "door", "dog", "porch", "")
	last := add(time.Minute, "yard", "person", "gate", "")

	if err := l.Trim(t.Context(), now); err != nil {
		t.Fatal(err)
	}
	all, _ := l.Query(t.Context(), Query{})
	if len(all) != 3 || all[0].ID != last {
		t.Fatalf("after trimming, %d events (newest %d), want the 3 younger than an hour, newest first", len(all), all[0].ID)
	}
	if _, err := os.Stat(filepath.Join(dir, "door/old.jpg")); !os.IsNotExist(err) {
		t.Errorf("the old event's snapshot is still there (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "door/new.jpg")); err != nil {
		t.Errorf("a recent snapshot was deleted: %v", err)
	}
	if l.SnapshotBytes() != 4 {
		t.Errorf("snapshot bytes %d, want 4", l.SnapshotBytes())
	}
	for _, tc := range []struct {
		q    Query
		want int
	}{
		{Query{Pipeline: "door"}, 2},
		{Query{Class: "person"}, 2},
		{Query{Zone: "porch", Class: "person"}, 1},
		{Query{From: now.Add(-20 * time.Minute)}, 2},
		{Query{To: now.Add(-20 * time.Minute)}, 1},
		{Query{BeforeID: last}, 2},
		{Query{Limit: 1}, 1},
	} {
		got, err := l.Query(t.Context(), tc.q)
		if err != nil || len(got) != tc.want {
			t.Errorf("%+v: %d events (%v), want %d", tc.q, len(got), err, tc.want)
		}
	}
	if got, _ := l.Query(t.Context(), Query{Zone: "porch", Class: "person"}); len(got) == 1 && got[0].ID != recent {
		t.Errorf("porch/person is event %d, want %d", got[0].ID, recent)
	}
	if _, err := l.Query(t.Context(), Query{Limit: 20000}); err == nil {
		t.Error("limit 20000: no error")
	}
	if _, err := l.SnapshotPath("../../etc/passwd"); err == nil {
		t.Error("a snapshot name leaving the snapshot dir was accepted")
	}
}

// TestEventLogTracks: a tracked object's event is stored at its start and
// updated in place; its snapshot is counted once however often it is
// replaced; its raw events show it; the byte limit takes the oldest
// snapshot of either kind first; age retention takes ended objects only,
// and never a file a raw event merely links to; a reopened log ends the
// objects left in view.
func TestEventLogTracks(t *testing.T) {
	dir := t.TempDir()
	db := testenv.DB(t)
	l, err := OpenEventLog(t.Context(), db, dir, EventLogConfig{MaxAge: time.Hour, MaxSnapshotBytes: 100}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	write := func(name string, n int) int64 {
		os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o750)
		os.WriteFile(filepath.Join(dir, name), make([]byte, n), 0o640)
		return int64(n)
	}
	exists := func(name string) bool { _, err := os.Stat(filepath.Join(dir, name)); return err == nil }

	// An old raw event with a snapshot of its own.
	old := &Event{Type: ZoneEnter, Pipeline: "door", Time: now.Add(-2 * time.Hour), Snapshot: "door/raw.jpg"}
	if _, err := l.Insert(t.Context(), old, write("door/raw.jpg", 30)); err != nil {
		t.Fatal(err)
	}
	// A tracked object: started with a 20-byte snapshot, replaced by a
	// 40-byte one.
	start := now.Add(-90 * time.Minute)
	ev := &Event{Type: TrackStart, Pipeline: "door", Class: "person", TrackID: 7, Score: 0.5, Time: start, Start: start, Snapshot: "door/obj-7.jpg"}
	id, err := l.StartTrack(t.Context(), ev, write("door/obj-7.jpg", 20))
	if err != nil {
		t.Fatal(err)
	}
	raw := &Event{Type: ObjectEnter, Pipeline: "door", Class: "person", TrackID: 7, Time: start, EventID: id, Snapshot: "door/obj-7.jpg"}
	if _, err := l.Insert(t.Context(), raw, 0); err != nil {
		t.Fatal(err)
	}
	ev.Type, ev.Score, ev.Time, ev.Zones = TrackUpdate, 0.8, start.Add(time.Second), []string{"porch", "gate"}
	if err := l.UpdateTrack(t.Context(), id, ev, write("door/obj-7.jpg", 40)); err != nil {
		t.Fatal(err)
	}
	if got := l.SnapshotBytes(); got != 70 {
		t.Errorf("snapshot bytes %d, want 70 (30 raw + 40 object)", got)
	}
	ev.Type, ev.Time, ev.End = TrackEnd, start.Add(2*time.Second), start.Add(2*time.Second)
	if err := l.UpdateTrack(t.Context(), id, ev, -1); err != nil {
		t.Fatal(err)
	}
	objs, err := l.QueryTracks(t.Context(), TrackQuery{Zone: "gate"})
	if err != nil || len(objs) != 1 {
		t.Fatalf("objects in zone gate: %v (%v)", objs, err)
	}
	if o := objs[0]; o.ID != id || o.Score != 0.8 || o.Snapshot != "door/obj-7.jpg" || !slices.Equal(o.Zones, []string{"porch", "gate"}) ||
		o.End.UnixMilli() != ev.End.UnixMilli() || o.Dwell != 2*time.Second {
		t.Errorf("stored object %+v", o)
	}
	for _, q := range []TrackQuery{{Zone: "por"}, {Class: "car"}, {Active: true}, {Pipeline: "yard"}} {
		if got, _ := l.QueryTracks(t.Context(), q); len(got) != 0 {
			t.Errorf("%+v matched %d objects", q, len(got))
		}
	}
	if got, _ := l.Query(t.Context(), Query{Type: ObjectEnter}); len(got) != 1 || got[0].EventID != id || got[0].Snapshot != "door/obj-7.jpg" {
		t.Errorf("raw event: %+v, want its object's event and snapshot", got)
	}

	// An object still in view, with a 50-byte snapshot: over the limit, the
	// oldest snapshot (the raw event's) goes first.
	live := &Event{Type: TrackStart, Pipeline: "door", Class: "car", TrackID: 8, Time: now, Start: now, Snapshot: "door/obj-8.jpg"}
	liveID, err := l.StartTrack(t.Context(), live, write("door/obj-8.jpg", 50))
	if err != nil {
		t.Fatal(err)
	}
	if exists("door/raw.jpg") || !exists("door/obj-7.jpg") || !exists("door/obj-8.jpg") || l.SnapshotBytes() != 90 {
		t.Errorf("after the byte limit: raw %v, obj-7 %v, obj-8 %v, %d bytes; want only the oldest (raw) gone, 90 bytes",
			exists("door/raw.jpg"), exists("door/obj-7.jpg"), exists("door/obj-8.jpg"), l.SnapshotBytes())
	}

	// An hour later, the ended object goes with its file; the raw event
	// that linked to it goes too; the one in view stays.
	if err := l.Trim(t.Context(), now.Add(30*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if exists("door/obj-7.jpg") || !exists("door/obj-8.jpg") || l.SnapshotBytes() != 50 {
		t.Errorf("after age retention: obj-7 %v, obj-8 %v, %d bytes", exists("door/obj-7.jpg"), exists("door/obj-8.jpg"), l.SnapshotBytes())
	}
	if got, _ := l.QueryTracks(t.Context(), TrackQuery{}); len(got) != 1 || got[0].ID != liveID || !got[0].End.IsZero() {
		t.Errorf("after age retention: %+v, want the object in view only", got)
	}

	// Reopened (after a crash): the object in view ends where it was last
	// seen.
	l2, err := OpenEventLog(t.Context(), db, dir, EventLogConfig{}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := l2.QueryTracks(t.Context(), TrackQuery{}); len(got) != 1 || got[0].End.UnixMilli() != now.UnixMilli() {
		t.Errorf("reopened: %+v, want it ended at its last update", got)
	}
	if l2.SnapshotBytes() != 50 {
		t.Errorf("reopened: %d snapshot bytes, want 50", l2.SnapshotBytes())
	}
}
