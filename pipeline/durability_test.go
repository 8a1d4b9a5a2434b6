package pipeline

import (
	"bufio"
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
	if os.Getenv("LEDGE_PIPELINE_CHILD_DB") != "" {
		return // the child's work runs in TestEventLogChild
	}
	dbPath := filepath.Join(t.TempDir(), "ledge.db")
	video(t, panVideo) // made before the child starts, so the child does not make its own
	cmd := exec.Command(os.Args[0], "-test.run=^TestEventLogChild$", "-test.v")
	cmd.Env = append(os.Environ(), "LEDGE_PIPELINE_CHILD_DB="+dbPath, "LEDGE_PIPELINE_CHILD_VIDEO="+videos[panVideo])
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
	deadline := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
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

// TestEventLogChild is the child process of TestEventLogSurvivesKill: it
// runs the pan video and prints each event id a subscriber gets.
func TestEventLogChild(t *testing.T) {
	path := os.Getenv("LEDGE_PIPELINE_CHILD_DB")
	if path == "" {
		return // only runs as the child of TestEventLogSurvivesKill
	}
	spec := Spec{Name: "kill", Source: sourceSpec(os.Getenv("LEDGE_PIPELINE_CHILD_VIDEO")),
		Detect: &DetectSpec{Model: testenv.Model(t, "yolox_nano.onnx"), Threshold: 0.3, Classes: []string{"person"}}}
	spec.Source.Loop = true
	cfg := DefaultConfig()
	cfg.SnapshotDir = t.TempDir()
	e, err := NewEngine(t.Context(), Options{Config: cfg, DB: testenv.DBAt(t, path), Library: testenv.ORTLib(t)}, []Spec{spec})
	if err != nil {
		t.Fatal(err)
	}
	sub := e.Subscribe(100)
	go e.Run(t.Context())
	for ev := range sub.C {
		if ev.ID > 0 {
			fmt.Printf("EVENT %s %d\n", ev.Type, ev.ID)
		}
	}
}
