package pipeline

import (
	"os"
	"path/filepath"
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
