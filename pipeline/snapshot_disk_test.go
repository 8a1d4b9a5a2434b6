package pipeline

import (
	"crypto/rand"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ledge/internal/testenv"
)

// zeros is an endless reader of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestSnapshotsGiveWayOnALowDisk: snapshots were bounded by
// maxSnapshotBytes (1 GiB) alone, so on a small data disk they filled it
// (a 160 MB one in 8 minutes in the audit) and took the room the hub's
// queue and the model store need. Now the oldest snapshots go before a
// snapshot would leave less than eventLog.minFreeBytes free (their events
// stay), said once; with none left to delete, the snapshot is not
// written, and the error names the setting. A real 48 MB tmpfs.
func TestSnapshotsGiveWayOnALowDisk(t *testing.T) {
	dir := testenv.Tmpfs(t, "48m")
	const minFree = 16 << 20
	logs := &syncBuffer{}
	l, err := OpenEventLog(t.Context(), testenv.DB(t), dir, EventLogConfig{MaxSnapshotBytes: 1 << 30, MinFreeBytes: minFree},
		slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	a := &snapshotAction{dir: dir, log: l}
	jpeg := make([]byte, 1<<20)
	rand.Read(jpeg)
	start := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	var first, last string
	for i := range 60 { // 60 MiB of snapshots on a 48 MB disk
		e := &Event{Type: ZoneEnter, Pipeline: "door", Class: "person", Zone: "z", Time: start.Add(time.Duration(i) * time.Second), Frame: uint64(i), jpeg: jpeg}
		n, err := a.write(t.Context(), e)
		if err != nil {
			t.Fatalf("snapshot %d: %v", i, err)
		}
		if _, err := l.Insert(t.Context(), e, n); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if free, _ := diskFree(dir); free < minFree {
			t.Fatalf("after snapshot %d: %d bytes free, under minFreeBytes (%d)", i, free, minFree)
		}
		if i == 0 {
			first = e.Snapshot
		}
		last = e.Snapshot
	}
	if _, err := os.Stat(filepath.Join(dir, first)); err == nil {
		t.Errorf("the oldest snapshot %s is still there", first)
	}
	if _, err := os.Stat(filepath.Join(dir, last)); err != nil {
		t.Errorf("the newest snapshot: %v", err)
	}
	if l.SnapshotsDeleted() == 0 {
		t.Error("no snapshot counted as deleted")
	}
	evs, err := l.Query(t.Context(), Query{Limit: 1000})
	if err != nil || len(evs) != 60 {
		t.Errorf("events after the snapshots gave way: %d (%v), want all 60", len(evs), err)
	}
	if n := strings.Count(logs.String(), "oldest snapshots deleted"); n != 1 {
		t.Errorf("the log says %d times that snapshots were deleted for room, want once:\n%s", n, logs.String())
	}

	// Something else takes the disk, more each time: the snapshots give
	// way until none is left; then the snapshot is not written.
	filler, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer filler.Close()
	for i := 0; ; i++ {
		if free, _ := diskFree(dir); free > 8<<20 {
			if _, err := io.CopyN(filler, zeros{}, free-8<<20); err != nil {
				t.Fatalf("filler: %v", err)
			}
		}
		e := &Event{Type: ZoneEnter, Pipeline: "door", Class: "person", Zone: "z", Time: start.Add(time.Hour + time.Duration(i)*time.Second), Frame: uint64(1000 + i), jpeg: jpeg}
		n, err := a.write(t.Context(), e)
		if err == nil {
			if i > 60 {
				t.Fatal("snapshots still written after 60 rounds of filling the disk")
			}
			l.Insert(t.Context(), e, n)
			continue
		}
		if !strings.Contains(err.Error(), "pipeline.eventLog.minFreeBytes") || !strings.Contains(err.Error(), "no snapshot left") {
			t.Fatalf("a snapshot with no room: %v, want an error naming pipeline.eventLog.minFreeBytes", err)
		}
		if e.Snapshot != "" {
			t.Errorf("the refused snapshot was recorded as %q", e.Snapshot)
		}
		break
	}
	if b := l.SnapshotBytes(); b != 0 {
		t.Errorf("%d snapshot bytes left, want every snapshot deleted before giving up", b)
	}
}
