package pipeline

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"ledge/internal/fault"
	"ledge/internal/migrate"
	"ledge/internal/outage"
)

// migrations are the event log's tables, append-only.
var migrations = []string{
	// 1: events, with their snapshot file and its size for retention.
	`CREATE TABLE pipeline_events (
		id             INTEGER PRIMARY KEY AUTOINCREMENT,
		time_ms        INTEGER NOT NULL,
		type           TEXT    NOT NULL,
		pipeline       TEXT    NOT NULL,
		zone           TEXT    NOT NULL DEFAULT '',
		class          TEXT    NOT NULL DEFAULT '',
		track_id       INTEGER NOT NULL DEFAULT 0,
		score          REAL    NOT NULL DEFAULT 0,
		x1 REAL NOT NULL DEFAULT 0, y1 REAL NOT NULL DEFAULT 0,
		x2 REAL NOT NULL DEFAULT 0, y2 REAL NOT NULL DEFAULT 0,
		width          INTEGER NOT NULL DEFAULT 0,
		height         INTEGER NOT NULL DEFAULT 0,
		count          INTEGER NOT NULL DEFAULT 0,
		previous       INTEGER NOT NULL DEFAULT 0,
		dwell_ms       INTEGER NOT NULL DEFAULT 0,
		frame          INTEGER NOT NULL DEFAULT 0,
		model          TEXT    NOT NULL DEFAULT '',
		snapshot       TEXT    NOT NULL DEFAULT '',
		snapshot_bytes INTEGER NOT NULL DEFAULT 0
	);
	CREATE INDEX pipeline_events_time ON pipeline_events (time_ms);
	CREATE INDEX pipeline_events_pipeline_time ON pipeline_events (pipeline, time_ms);
	CREATE INDEX pipeline_events_snapshots ON pipeline_events (id) WHERE snapshot_bytes > 0`,
	// 2: one event per tracked object (track.start/update/end), and the
	// raw events' link to it.
	`ALTER TABLE pipeline_events ADD COLUMN event_id INTEGER NOT NULL DEFAULT 0;
	CREATE TABLE pipeline_tracks (
		id             INTEGER PRIMARY KEY AUTOINCREMENT,
		pipeline       TEXT    NOT NULL,
		track_id       INTEGER NOT NULL,
		class          TEXT    NOT NULL DEFAULT '',
		start_ms       INTEGER NOT NULL,
		end_ms         INTEGER NOT NULL DEFAULT 0, -- 0 while the object is in view
		updated_ms     INTEGER NOT NULL,
		score          REAL    NOT NULL DEFAULT 0,
		x1 REAL NOT NULL DEFAULT 0, y1 REAL NOT NULL DEFAULT 0,
		x2 REAL NOT NULL DEFAULT 0, y2 REAL NOT NULL DEFAULT 0,
		width          INTEGER NOT NULL DEFAULT 0,
		height         INTEGER NOT NULL DEFAULT 0,
		zones          TEXT    NOT NULL DEFAULT '', -- comma-separated, in order of entry
		frame          INTEGER NOT NULL DEFAULT 0,
		model          TEXT    NOT NULL DEFAULT '',
		snapshot       TEXT    NOT NULL DEFAULT '',
		snapshot_bytes INTEGER NOT NULL DEFAULT 0
	);
	CREATE INDEX pipeline_tracks_start ON pipeline_tracks (start_ms);
	CREATE INDEX pipeline_tracks_pipeline_start ON pipeline_tracks (pipeline, start_ms);
	CREATE INDEX pipeline_tracks_open ON pipeline_tracks (id) WHERE end_ms = 0;
	CREATE INDEX pipeline_tracks_snapshots ON pipeline_tracks (id) WHERE snapshot_bytes > 0`,
}

// EventLog stores events in SQLite (tables pipeline_*) and keeps it within
// its retention: events older than MaxAge go, with their snapshots, and the
// oldest snapshots go when all of them take more than MaxSnapshotBytes.
// Raw events are rows of pipeline_events; each tracked object is one row
// of pipeline_tracks, written at its track.start and updated by its
// track.update and track.end; a raw event of that object links to it
// (event_id) and shows its snapshot. Safe for concurrent use.
type EventLog struct {
	db  *sql.DB
	dir string // snapshot dir
	cfg EventLogConfig
	log *slog.Logger

	// writes tells the log once when storing events starts failing (a
	// full disk) and when it works again, not once per event.
	writes *outage.Log

	mu        sync.Mutex // guards snapBytes and serialises trimming
	snapBytes int64
	deleted   int64 // snapshots deleted by the byte limit, ever
	// roomLogged is when makeRoom last said it deleted snapshots.
	roomLogged time.Time
}

// OpenEventLog applies the event log's migrations and reads the snapshot
// total.
func OpenEventLog(ctx context.Context, db *sql.DB, snapshotDir string, cfg EventLogConfig, log *slog.Logger) (*EventLog, error) {
	if err := migrate.Apply(ctx, db, "pipeline", migrations); err != nil {
		return nil, err
	}
	l := &EventLog{db: db, dir: snapshotDir, cfg: cfg, log: log, writes: outage.New(log, "event log", 0)}
	if err := db.QueryRowContext(ctx, `SELECT (SELECT COALESCE(SUM(snapshot_bytes), 0) FROM pipeline_events)
		+ (SELECT COALESCE(SUM(snapshot_bytes), 0) FROM pipeline_tracks)`).Scan(&l.snapBytes); err != nil {
		return nil, fmt.Errorf("event log: %w", err)
	}
	// Objects still in view when ledge last stopped (or was killed) end
	// where they were last seen.
	if _, err := db.ExecContext(ctx, `UPDATE pipeline_tracks SET end_ms = updated_ms WHERE end_ms = 0`); err != nil {
		return nil, fmt.Errorf("event log: %w", err)
	}
	return l, nil
}

// SnapshotDir is where snapshot files live.
func (l *EventLog) SnapshotDir() string { return l.dir }

// SnapshotsDeleted counts the snapshots the byte limit deleted.
func (l *EventLog) SnapshotsDeleted() int64 { l.mu.Lock(); defer l.mu.Unlock(); return l.deleted }

// SnapshotBytes is the size of the snapshots the log refers to.
func (l *EventLog) SnapshotBytes() int64 { l.mu.Lock(); defer l.mu.Unlock(); return l.snapBytes }

// Insert stores a raw event e (with its own snapshot's size in bytes, 0
// for none: its snapshot is then its object's) and returns its id; then
// enforces the snapshot byte limit.
func (l *EventLog) Insert(ctx context.Context, e *Event, snapBytes int64) (_ int64, err error) {
	defer func() { l.wrote(ctx, err) }()
	b := e.Box
	snap := e.Snapshot
	if snapBytes <= 0 {
		snap = ""
	}
	res, err := l.db.ExecContext(ctx, `INSERT INTO pipeline_events
		(time_ms, type, pipeline, zone, class, track_id, score, x1, y1, x2, y2, width, height, count, previous, dwell_ms, frame, model, snapshot, snapshot_bytes, event_id)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.Time.UnixMilli(), e.Type, e.Pipeline, e.Zone, e.Class, e.TrackID, e.Score, b.X1, b.Y1, b.X2, b.Y2,
		e.Width, e.Height, e.Count, e.Previous, e.Dwell.Milliseconds(), e.Frame, e.Model, snap, max(snapBytes, 0), e.EventID)
	if err != nil {
		return 0, fmt.Errorf("event log insert: %w", err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return 0, fmt.Errorf("event log insert: %w", err)
	}
	l.addSnapBytes(ctx, snapBytes)
	return id, nil
}

// wrote tells the outage log how a write went: a WARN when writes start
// failing, with the database's own reason (the same for every event of a
// full disk), an INFO when they work again.
func (l *EventLog) wrote(ctx context.Context, err error) {
	switch {
	case err == nil:
		l.writes.OK()
	case ctx.Err() == nil:
		cause := err
		for u := errors.Unwrap(cause); u != nil; u = errors.Unwrap(cause) {
			cause = u
		}
		l.writes.Fail(cause.Error(), "err", err)
	}
}

// addSnapBytes counts delta more snapshot bytes and enforces the limit.
func (l *EventLog) addSnapBytes(ctx context.Context, delta int64) {
	if delta == 0 {
		return
	}
	l.mu.Lock()
	l.snapBytes += delta
	over := l.cfg.MaxSnapshotBytes > 0 && l.snapBytes > l.cfg.MaxSnapshotBytes
	l.mu.Unlock()
	if over {
		if err := l.trimBytes(ctx); err != nil {
			l.log.Warn("snapshot retention", "err", err)
		}
	}
}

// StartTrack stores a tracked object's event from its track.start e
// (with its snapshot's size, 0 for none) and returns its id.
func (l *EventLog) StartTrack(ctx context.Context, e *Event, snapBytes int64) (_ int64, err error) {
	defer func() { l.wrote(ctx, err) }()
	b := e.Box
	snap := e.Snapshot
	if snapBytes <= 0 {
		snap, snapBytes = "", 0
	}
	res, err := l.db.ExecContext(ctx, `INSERT INTO pipeline_tracks
		(pipeline, track_id, class, start_ms, end_ms, updated_ms, score, x1, y1, x2, y2, width, height, zones, frame, model, snapshot, snapshot_bytes)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.Pipeline, e.TrackID, e.Class, e.Start.UnixMilli(), msOrZero(e.End), e.Time.UnixMilli(), e.Score, b.X1, b.Y1, b.X2, b.Y2,
		e.Width, e.Height, strings.Join(e.Zones, ","), e.Frame, e.Model, snap, snapBytes)
	if err != nil {
		return 0, fmt.Errorf("event log: start of track %d: %w", e.TrackID, err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return 0, fmt.Errorf("event log: start of track %d: %w", e.TrackID, err)
	}
	l.addSnapBytes(ctx, snapBytes)
	return id, nil
}

// UpdateTrack records a track.update or track.end e of the tracked
// object's event id. snapBytes is the size of a new snapshot in
// e.Snapshot, or -1 when the snapshot did not change.
func (l *EventLog) UpdateTrack(ctx context.Context, id int64, e *Event, snapBytes int64) (err error) {
	defer func() { l.wrote(ctx, err) }()
	b := e.Box
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("event log: update of event %d: %w", id, err)
	}
	defer tx.Rollback()
	var old int64
	if err := tx.QueryRowContext(ctx, `SELECT snapshot_bytes FROM pipeline_tracks WHERE id = ?`, id).Scan(&old); err != nil {
		return fmt.Errorf("event log: update of event %d: %w", id, err)
	}
	_, err = tx.ExecContext(ctx, `UPDATE pipeline_tracks SET end_ms = ?, updated_ms = ?, score = ?, x1 = ?, y1 = ?, x2 = ?, y2 = ?,
		width = ?, height = ?, zones = ?, frame = ?, model = ? WHERE id = ?`,
		msOrZero(e.End), e.Time.UnixMilli(), e.Score, b.X1, b.Y1, b.X2, b.Y2, e.Width, e.Height, strings.Join(e.Zones, ","), e.Frame, e.Model, id)
	if err != nil {
		return fmt.Errorf("event log: update of event %d: %w", id, err)
	}
	if snapBytes >= 0 {
		if _, err := tx.ExecContext(ctx, `UPDATE pipeline_tracks SET snapshot = ?, snapshot_bytes = ? WHERE id = ?`, e.Snapshot, snapBytes, id); err != nil {
			return fmt.Errorf("event log: update of event %d: %w", id, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("event log: update of event %d: %w", id, err)
	}
	if snapBytes >= 0 {
		l.addSnapBytes(ctx, snapBytes-old)
	}
	return nil
}

func msOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// Query selects events; zero fields match everything.
type Query struct {
	From, To time.Time // scene time, To exclusive
	Pipeline string
	Type     string
	Class    string
	Zone     string
	// BeforeID pages backwards: only events with a smaller id.
	BeforeID int64
	// Limit caps the result (default 100, at most 10000).
	Limit int
}

// Query returns matching events, newest first.
func (l *EventLog) Query(ctx context.Context, q Query) ([]Event, error) {
	var where []string
	var args []any
	add := func(cond string, v any) { where = append(where, cond); args = append(args, v) }
	if !q.From.IsZero() {
		add("e.time_ms >= ?", q.From.UnixMilli())
	}
	if !q.To.IsZero() {
		add("e.time_ms < ?", q.To.UnixMilli())
	}
	if q.Pipeline != "" {
		add("e.pipeline = ?", q.Pipeline)
	}
	if q.Type != "" {
		add("e.type = ?", q.Type)
	}
	if q.Class != "" {
		add("e.class = ?", q.Class)
	}
	if q.Zone != "" {
		add("e.zone = ?", q.Zone)
	}
	if q.BeforeID > 0 {
		add("e.id < ?", q.BeforeID)
	}
	if q.Limit < 0 || q.Limit > 10000 {
		return nil, fault.New(fault.Invalid, "limit %d: want 1..10000", q.Limit)
	}
	limit := q.Limit
	if limit == 0 {
		limit = 100
	}
	stmt := `SELECT e.id, e.time_ms, e.type, e.pipeline, e.zone, e.class, e.track_id, e.score, e.x1, e.y1, e.x2, e.y2, e.width, e.height,
		e.count, e.previous, e.dwell_ms, e.frame, e.model, CASE WHEN e.snapshot != '' THEN e.snapshot ELSE COALESCE(t.snapshot, '') END, e.event_id
		FROM pipeline_events e LEFT JOIN pipeline_tracks t ON e.event_id != 0 AND t.id = e.event_id`
	if len(where) > 0 {
		stmt += " WHERE " + strings.Join(where, " AND ")
	}
	stmt += " ORDER BY e.id DESC LIMIT ?"
	args = append(args, limit)
	rows, err := l.db.QueryContext(ctx, stmt, args...)
	if err != nil {
		return nil, fmt.Errorf("event log query: %w", err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var e Event
		var ms, dwell int64
		if err := rows.Scan(&e.ID, &ms, &e.Type, &e.Pipeline, &e.Zone, &e.Class, &e.TrackID, &e.Score,
			&e.Box.X1, &e.Box.Y1, &e.Box.X2, &e.Box.Y2, &e.Width, &e.Height, &e.Count, &e.Previous, &dwell,
			&e.Frame, &e.Model, &e.Snapshot, &e.EventID); err != nil {
			return nil, fmt.Errorf("event log query: %w", err)
		}
		e.Time, e.Dwell = time.UnixMilli(ms), time.Duration(dwell)*time.Millisecond
		out = append(out, e)
	}
	return out, rows.Err()
}

// TrackQuery selects tracked objects' events; zero fields match
// everything.
type TrackQuery struct {
	From, To time.Time // the object's start (scene time), To exclusive
	Pipeline string
	Class    string
	Zone     string // the object entered it
	// Active selects the objects still in view.
	Active bool
	// BeforeID pages backwards: only events with a smaller id.
	BeforeID int64
	// Limit caps the result (default 100, at most 10000).
	Limit int
}

// TrackEvent is the type of a tracked object's stored event as queries
// return it; the stream gives track.start, track.update and track.end.
const TrackEvent = "track"

// QueryTracks returns matching tracked objects' events, newest first.
func (l *EventLog) QueryTracks(ctx context.Context, q TrackQuery) ([]Event, error) {
	var where []string
	var args []any
	add := func(cond string, v ...any) { where = append(where, cond); args = append(args, v...) }
	if !q.From.IsZero() {
		add("start_ms >= ?", q.From.UnixMilli())
	}
	if !q.To.IsZero() {
		add("start_ms < ?", q.To.UnixMilli())
	}
	if q.Pipeline != "" {
		add("pipeline = ?", q.Pipeline)
	}
	if q.Class != "" {
		add("class = ?", q.Class)
	}
	if q.Zone != "" {
		add("instr(',' || zones || ',', ?) > 0", ","+q.Zone+",")
	}
	if q.Active {
		add("end_ms = 0")
	}
	if q.BeforeID > 0 {
		add("id < ?", q.BeforeID)
	}
	if q.Limit < 0 || q.Limit > 10000 {
		return nil, fault.New(fault.Invalid, "limit %d: want 1..10000", q.Limit)
	}
	limit := q.Limit
	if limit == 0 {
		limit = 100
	}
	stmt := `SELECT id, pipeline, track_id, class, start_ms, end_ms, updated_ms, score, x1, y1, x2, y2, width, height,
		zones, frame, model, snapshot FROM pipeline_tracks`
	if len(where) > 0 {
		stmt += " WHERE " + strings.Join(where, " AND ")
	}
	stmt += " ORDER BY id DESC LIMIT ?"
	args = append(args, limit)
	rows, err := l.db.QueryContext(ctx, stmt, args...)
	if err != nil {
		return nil, fmt.Errorf("event log query: %w", err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		e := Event{Type: TrackEvent}
		var start, end, updated int64
		var zones string
		if err := rows.Scan(&e.ID, &e.Pipeline, &e.TrackID, &e.Class, &start, &end, &updated, &e.Score,
			&e.Box.X1, &e.Box.Y1, &e.Box.X2, &e.Box.Y2, &e.Width, &e.Height, &zones, &e.Frame, &e.Model, &e.Snapshot); err != nil {
			return nil, fmt.Errorf("event log query: %w", err)
		}
		e.EventID, e.Start, e.Time = e.ID, time.UnixMilli(start), time.UnixMilli(updated)
		if end != 0 {
			e.End = time.UnixMilli(end)
		}
		e.Dwell = e.Time.Sub(e.Start)
		if !e.End.IsZero() {
			e.Dwell = e.End.Sub(e.Start)
		}
		if zones != "" {
			e.Zones = strings.Split(zones, ",")
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// SnapshotPath returns the file of a snapshot named in an event, refusing
// names that leave the snapshot dir.
func (l *EventLog) SnapshotPath(rel string) (string, error) {
	if rel == "" || !filepath.IsLocal(rel) {
		return "", fault.New(fault.Invalid, "snapshot %q: not a snapshot name", rel)
	}
	return filepath.Join(l.dir, rel), nil
}

// Run enforces retention every Interval until ctx ends.
func (l *EventLog) Run(ctx context.Context) error {
	every := l.cfg.Interval
	if every <= 0 {
		every = time.Minute
	}
	if err := l.Trim(ctx, time.Now()); err != nil && ctx.Err() == nil {
		l.log.Warn("event retention", "err", err)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			if err := l.Trim(ctx, now); err != nil && ctx.Err() == nil {
				l.log.Warn("event retention", "err", err)
			}
		}
	}
}

// Trim applies both retention rules now.
func (l *EventLog) Trim(ctx context.Context, now time.Time) error {
	return errors.Join(l.trimAge(ctx, now), l.trimBytes(ctx))
}

// trimAge deletes events older than MaxAge and their snapshots: raw events
// by their time, tracked objects' events by their end (one still in view
// stays).
func (l *EventLog) trimAge(ctx context.Context, now time.Time) error {
	if l.cfg.MaxAge <= 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	cut := now.Add(-l.cfg.MaxAge).UnixMilli()
	for _, t := range []struct{ sel, del string }{
		{`SELECT id, snapshot, snapshot_bytes FROM pipeline_events WHERE time_ms < ? ORDER BY id LIMIT 500`, `DELETE FROM pipeline_events WHERE id = ?`},
		{`SELECT id, snapshot, snapshot_bytes FROM pipeline_tracks WHERE end_ms != 0 AND end_ms < ? ORDER BY id LIMIT 500`, `DELETE FROM pipeline_tracks WHERE id = ?`},
	} {
		for {
			rows, err := l.db.QueryContext(ctx, t.sel, cut)
			if err != nil {
				return fmt.Errorf("age retention: %w", err)
			}
			ids, files, bytes, err := scanSnaps(rows)
			if err != nil {
				return err
			}
			if len(ids) == 0 {
				break
			}
			if err := l.deleteRows(ctx, t.del, ids); err != nil {
				return err
			}
			l.removeFiles(files)
			l.snapBytes -= bytes
		}
	}
	return nil
}

// trimBytes deletes the oldest snapshots until the total fits; the events
// stay, without their snapshot.
func (l *EventLog) trimBytes(ctx context.Context) error {
	if l.cfg.MaxSnapshotBytes <= 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, err := l.trimTo(ctx, l.cfg.MaxSnapshotBytes)
	return err
}

// diskFree is the space left to ledge on the file system of dir.
func diskFree(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// makeRoom readies the snapshot dir for a snapshot of n bytes: when it
// would leave less than MinFreeBytes free, the oldest snapshots are
// deleted (their events stay) until it does not; with none left, it says
// why the snapshot must not be written. Snapshots give way to what needs
// the disk more (the hub's queue, the model store, the database).
func (l *EventLog) makeRoom(ctx context.Context, n int64) error {
	if l.cfg.MinFreeBytes <= 0 {
		return nil
	}
	free, err := diskFree(l.dir)
	if err != nil || free-n >= l.cfg.MinFreeBytes {
		return nil // a dir that cannot be measured is written as before
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	deleted, err := l.trimTo(ctx, max(l.snapBytes-(l.cfg.MinFreeBytes+n-free), 0))
	if err != nil {
		return err
	}
	if now := time.Now(); deleted > 0 && now.Sub(l.roomLogged) >= 10*time.Minute {
		l.roomLogged = now
		l.log.Info("data disk low: oldest snapshots deleted to keep pipeline.eventLog.minFreeBytes free (their events stay)",
			"deleted", deleted, "free_mib", free>>20, "min_free_mib", l.cfg.MinFreeBytes>>20, "dir", l.dir)
	}
	if free, err = diskFree(l.dir); err == nil && free-n < l.cfg.MinFreeBytes {
		return fmt.Errorf("snapshot not written: %d MiB free on the disk of %s, under pipeline.eventLog.minFreeBytes (%d MiB), and no snapshot left to delete",
			free>>20, l.dir, l.cfg.MinFreeBytes>>20)
	}
	return nil
}

// trimTo deletes the oldest snapshots until they take at most limit
// bytes, and returns how many it deleted; l.mu is held.
func (l *EventLog) trimTo(ctx context.Context, limit int64) (int, error) {
	total := 0
	for l.snapBytes > limit {
		rows, err := l.db.QueryContext(ctx, `SELECT 0, id, snapshot, snapshot_bytes, time_ms FROM pipeline_events WHERE snapshot_bytes > 0
			UNION ALL SELECT 1, id, snapshot, snapshot_bytes, start_ms FROM pipeline_tracks WHERE snapshot_bytes > 0
			ORDER BY 5, 1, 2 LIMIT 100`)
		if err != nil {
			return total, fmt.Errorf("snapshot retention: %w", err)
		}
		var ids [2][]int64
		var files []string
		var freed int64
		n := 0
		for rows.Next() {
			var table int
			var id, size, at int64
			var f string
			if err := rows.Scan(&table, &id, &f, &size, &at); err != nil {
				rows.Close()
				return total, fmt.Errorf("snapshot retention: %w", err)
			}
			n++
			if l.snapBytes-freed <= limit {
				continue // oldest first, only as many as needed
			}
			ids[table] = append(ids[table], id)
			files = append(files, f)
			freed += size
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return total, fmt.Errorf("snapshot retention: %w", err)
		}
		if n == 0 {
			l.snapBytes = 0
			return total, nil
		}
		if err := l.deleteRows(ctx, `UPDATE pipeline_events SET snapshot = '', snapshot_bytes = 0 WHERE id = ?`, ids[0]); err != nil {
			return total, err
		}
		if err := l.deleteRows(ctx, `UPDATE pipeline_tracks SET snapshot = '', snapshot_bytes = 0 WHERE id = ?`, ids[1]); err != nil {
			return total, err
		}
		l.removeFiles(files)
		l.snapBytes -= freed
		l.deleted += int64(len(files))
		total += len(files)
	}
	return total, nil
}

func (l *EventLog) deleteRows(ctx context.Context, stmt string, ids []int64) error {
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("retention: %w", err)
	}
	defer tx.Rollback()
	st, err := tx.PrepareContext(ctx, stmt)
	if err != nil {
		return fmt.Errorf("retention: %w", err)
	}
	defer st.Close()
	for _, id := range ids {
		if _, err := st.ExecContext(ctx, id); err != nil {
			return fmt.Errorf("retention: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("retention: %w", err)
	}
	return nil
}

func (l *EventLog) removeFiles(files []string) {
	for _, f := range files {
		if f == "" {
			continue
		}
		p, err := l.SnapshotPath(f)
		if err != nil {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			l.log.Warn("remove snapshot", "file", p, "err", err)
		}
	}
}

func scanSnaps(rows *sql.Rows) (ids []int64, files []string, total int64, err error) {
	ids, files, sizes, err := scanSnapsEach(rows)
	for _, s := range sizes {
		total += s
	}
	return ids, files, total, err
}

func scanSnapsEach(rows *sql.Rows) (ids []int64, files []string, sizes []int64, err error) {
	defer rows.Close()
	for rows.Next() {
		var id, n int64
		var f string
		if err := rows.Scan(&id, &f, &n); err != nil {
			return nil, nil, nil, fmt.Errorf("retention: %w", err)
		}
		if n <= 0 {
			f = "" // the row does not own the file (its object's)
		}
		ids, files, sizes = append(ids, id), append(files, f), append(sizes, n)
	}
	return ids, files, sizes, rows.Err()
}
