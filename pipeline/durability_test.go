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
// process is killed with SIGKILL and the database reopened.
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
	var ids []int64
	sc := bufio.NewScanner(out)
	deadline := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
	defer deadline.Stop()
	for sc.Scan() {
		if id, ok := strings.CutPrefix(sc.Text(), "EVENT "); ok {
			n, _ := strconv.ParseInt(id, 10, 64)
			ids = append(ids, n)
			if len(ids) == 5 {
				cmd.Process.Signal(syscall.SIGKILL)
				break
			}
		}
	}
	cmd.Wait()
	if len(ids) < 5 {
		t.Fatalf("the child reported %d events before it ended, want 5", len(ids))
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
			fmt.Printf("EVENT %d\n", ev.ID)
		}
	}
}
