package pipeline

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"ledge/internal/testenv"
)

// TestEventLogSurvivesKill: an event a subscriber (or an action) received
// carries the id the event log gave it, and it is in the database after the
// process is killed with SIGKILL and the database reopened: the raw events
// and the tracked objects' events (which end where the object was last
// seen).
func TestEventLogSurvivesKill(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "ledge.db")
	video(t, panVideo) // made before the child starts, so the child does not make its own
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "LEDGE_PIPELINE_CHILD_DB="+dbPath, "LEDGE_PIPELINE_CHILD_VIDEO="+videos[panVideo],
		"LEDGE_PIPELINE_CHILD_MODEL="+testenv.Model(t, "yolox_nano.onnx"), "LEDGE_PIPELINE_CHILD_SNAPSHOTS="+t.TempDir(),
		"LEDGE_ORT_LIB="+testenv.ORTLib(t))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var ids, tracks []int64
	sc := bufio.NewScanner(out)
	deadline := time.AfterFunc(60*time.Second*testenv.Slowdown(), func() { cmd.Process.Kill() })
	defer deadline.Stop()
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "EVENT "); ok {
			ty, id, _ := strings.Cut(rest, " ")
			n, _ := strconv.ParseInt(id, 10, 64)
			if isTrackEvent(ty) {
				tracks = append(tracks, n)
			} else {
				ids = append(ids, n)
			}
			if len(ids) >= 5 && len(tracks) >= 1 {
				cmd.Process.Signal(syscall.SIGKILL)
				break
			}
		}
	}
	cmd.Wait()
	if len(ids) < 5 || len(tracks) < 1 {
		t.Fatalf("the child reported %d raw events and %d tracked objects' events before it ended, want 5 and 1", len(ids), len(tracks))
	}
	db := testenv.DBAt(t, dbPath)
	l, err := OpenEventLog(t.Context(), db, t.TempDir(), DefaultConfig().EventLog, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	got, err := l.Query(t.Context(), Query{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	have := map[int64]bool{}
	for _, e := range got {
		have[e.ID] = true
	}
	for _, id := range ids {
		if !have[id] {
			t.Errorf("event %d was handed out but is not in the log after kill -9", id)
		}
	}
	objs, err := l.QueryTracks(t.Context(), TrackQuery{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	ended := map[int64]bool{}
	for _, e := range objs {
		ended[e.ID] = !e.End.IsZero() && !e.End.Before(e.Start)
	}
	for _, id := range tracks {
		if ok, found := ended[id]; !found {
			t.Errorf("tracked object's event %d was handed out but is not in the log after kill -9", id)
		} else if !ok {
			t.Errorf("tracked object's event %d has no end after a restart", id)
		}
	}
}

// eventLogChild is the child process of TestEventLogSurvivesKill, run by
// TestMain when LEDGE_PIPELINE_CHILD_DB is set: it runs the pan video and
// prints each event id a subscriber gets, until it is killed.
func eventLogChild() int {
	spec := Spec{Name: "kill", Source: sourceSpec(os.Getenv("LEDGE_PIPELINE_CHILD_VIDEO")),
		Detect: &DetectSpec{Model: os.Getenv("LEDGE_PIPELINE_CHILD_MODEL"), Threshold: 0.3, Classes: []string{"person"}}}
	spec.Source.Loop = true
	cfg := DefaultConfig()
	cfg.SnapshotDir = os.Getenv("LEDGE_PIPELINE_CHILD_SNAPSHOTS")
	db, err := sql.Open("sqlite3", "file:"+os.Getenv("LEDGE_PIPELINE_CHILD_DB")+"?_journal_mode=WAL&_synchronous=FULL&_foreign_keys=on&_busy_timeout=10000&_txlock=immediate")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx := context.Background()
	e, err := NewEngine(ctx, Options{Config: cfg, DB: db, Library: os.Getenv("LEDGE_ORT_LIB")}, []Spec{spec})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	sub := e.Subscribe(100)
	go e.Run(ctx)
	for ev := range sub.C {
		if ev.ID > 0 {
			fmt.Printf("EVENT %s %d\n", ev.Type, ev.ID)
		}
	}
	return 0
}
