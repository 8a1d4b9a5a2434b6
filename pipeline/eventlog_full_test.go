package pipeline

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"ledge/internal/testenv"
)

// TestEventLogFullSaysSoOnce: when the database cannot grow (a full disk;
// here SQLite's own page limit, which fails the same way with
// SQLITE_FULL), a busy scene's events fail to be stored: the log says so
// once, with the reason, not once per event (it flooded the log several
// times a second), and says when writes work again.
func TestEventLogFullSaysSoOnce(t *testing.T) {
	db := testenv.DB(t)
	db.SetMaxOpenConns(1) // the page limit is the connection's
	logs := &syncBuffer{}
	l, err := OpenEventLog(t.Context(), db, t.TempDir(), EventLogConfig{}, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	var pages int64
	if err := db.QueryRow(`PRAGMA page_count`).Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(fmt.Sprintf(`PRAGMA max_page_count = %d`, pages)); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 8192) // each row needs a new page
	failed := 0
	for i := range 200 {
		e := &Event{Type: ZoneEnter, Pipeline: "door", Class: "person", Zone: big, Time: time.Now(), TrackID: int64(i + 1), Start: time.Now()}
		if _, err := l.Insert(t.Context(), e, 0); err != nil {
			failed++
		}
		if _, err := l.StartTrack(t.Context(), e, 0); err != nil {
			failed++
		}
	}
	if failed < 300 {
		t.Fatalf("only %d of 400 writes failed: the page limit did not hold", failed)
	}
	out := logs.String()
	if n := strings.Count(out, "level=WARN"); n != 1 || !strings.Contains(out, "event log failing") || !strings.Contains(out, "full") {
		t.Errorf("%d writes failed; the log has %d WARNs, want one saying the event log fails and why:\n%.2000s", failed, n, out)
	}
	if _, err := db.Exec(`PRAGMA max_page_count = 1000000`); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Insert(t.Context(), &Event{Type: ZoneEnter, Pipeline: "door", Time: time.Now()}, 0); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "event log recovered") {
		t.Errorf("no word when writes work again:\n%.2000s", logs.String())
	}
}
