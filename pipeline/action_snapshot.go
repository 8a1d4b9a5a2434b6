package pipeline

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// snapshotAction writes the annotated frame of an event (encoded by the
// process stage at the action's quality) as a JPEG under
// <snapshotDir>/<pipeline>/<yyyy-mm-dd>/. A tracked object has one file,
// named by its start and track id, replaced (atomically) as its best
// detection improves; a raw event taken by the action has a file of its
// own. It runs in the dispatcher, before the event is logged, so the log
// records the file.
type snapshotAction struct {
	dir string
	// log, when there is one, makes room on the disk first (the oldest
	// snapshots go rather than the disk's last free space).
	log *EventLog
}

// write stores e's JPEG and sets e.Snapshot; it returns the size.
func (a *snapshotAction) write(ctx context.Context, e *Event) (int64, error) {
	if len(e.jpeg) == 0 {
		return 0, fmt.Errorf("snapshot: no frame for event %s", e.Type)
	}
	rel := filepath.Join(e.Pipeline, e.Time.UTC().Format("2006-01-02"),
		e.Time.UTC().Format("150405.000")+"-"+strconv.FormatUint(e.Frame, 10)+"-"+e.Type+"-"+strconv.FormatInt(e.TrackID, 10)+".jpg")
	if isTrackEvent(e.Type) {
		rel = filepath.Join(e.Pipeline, e.Start.UTC().Format("2006-01-02"),
			e.Start.UTC().Format("150405.000")+"-track-"+strconv.FormatInt(e.TrackID, 10)+".jpg")
	}
	p := filepath.Join(a.dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		return 0, fmt.Errorf("snapshot: %w", err)
	}
	if a.log != nil {
		if err := a.log.makeRoom(ctx, int64(len(e.jpeg))); err != nil {
			return 0, err
		}
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, e.jpeg, 0o640); err != nil {
		return 0, fmt.Errorf("snapshot: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return 0, fmt.Errorf("snapshot: %w", err)
	}
	e.Snapshot = rel
	return int64(len(e.jpeg)), nil
}

func (a *snapshotAction) do(ctx context.Context, e *Event) error {
	_, err := a.write(ctx, e)
	return err
}

func (a *snapshotAction) close() {}
