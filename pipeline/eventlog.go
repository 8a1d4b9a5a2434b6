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
	"time"

	"ledge/internal/fault"
	"ledge/internal/migrate"
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
}

// EventLog stores events in SQLite (tables pipeline_*) and keeps it within
// its retention: events older than MaxAge go, with their snapshots, and the
// oldest snapshots go when all of them take more than MaxSnapshotBytes.
// Safe for concurrent use.
type EventLog struct {
	db  *sql.DB
	dir string // snapshot dir
	cfg EventLogConfig
	log *slog.Logger

	mu        sync.Mutex // guards snapBytes and serialises trimming
	snapBytes int64
	deleted   int64 // snapshots deleted by the byte limit, ever
}

// OpenEventLog applies the event log's migrations and reads the snapshot
// total.
func OpenEventLog(ctx context.Context, db *sql.DB, snapshotDir string, cfg EventLogConfig, log *slog.Logger) (*EventLog, error) {
	if err := migrate.Apply(ctx, db, "pipeline", migrations); err != nil {
		return nil, err
	}
	l := &EventLog{db: db, dir: snapshotDir, cfg: cfg, log: log}
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(SUM(snapshot_bytes), 0) FROM pipeline_events`).Scan(&l.snapBytes); err != nil {
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

// Insert stores e (with its snapshot's size in bytes, 0 for none) and
// returns its id; then enforces the snapshot byte limit.
func (l *EventLog) Insert(ctx context.Context, e *Event, snapBytes int64) (int64, error) {
	b := e.Box
	res, err := l.db.ExecContext(ctx, `INSERT INTO pipeline_events
		(time_ms, type, pipeline, zone, class, track_id, score, x1, y1, x2, y2, width, height, count, previous, dwell_ms, frame, model, snapshot, snapshot_bytes)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.Time.UnixMilli(), e.Type, e.Pipeline, e.Zone, e.Class, e.TrackID, e.Score, b.X1, b.Y1, b.X2, b.Y2,
		e.Width, e.Height, e.Count, e.Previous, e.Dwell.Milliseconds(), e.Frame, e.Model, e.Snapshot, snapBytes)
	if err != nil {
		return 0, fmt.Errorf("event log insert: %w", err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return 0, fmt.Errorf("event log insert: %w", err)
	}
	if snapBytes > 0 {
		l.mu.Lock()
		l.snapBytes += snapBytes
		over := l.cfg.MaxSnapshotBytes > 0 && l.snapBytes > l.cfg.MaxSnapshotBytes
		l.mu.Unlock()
		if over {
			if err := l.trimBytes(ctx); err != nil {
				l.log.Warn("snapshot retention", "err", err)
			}
		}
	}
	return id, nil
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
		add("time_ms >= ?", q.From.UnixMilli())
	}
	if !q.To.IsZero() {
		add("time_ms < ?", q.To.UnixMilli())
	}
	if q.Pipeline != "" {
		add("pipeline = ?", q.Pipeline)
	}
	if q.Type != "" {
		add("type = ?", q.Type)
	}
	if q.Class != "" {
		add("class = ?", q.Class)
	}
	if q.Zone != "" {
		add("zone = ?", q.Zone)
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
	stmt := `SELECT id, time_ms, type, pipeline, zone, class, track_id, score, x1, y1, x2, y2, width, height,
		count, previous, dwell_ms, frame, model, snapshot FROM pipeline_events`
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
		var e Event
		var ms, dwell int64
		if err := rows.Scan(&e.ID, &ms, &e.Type, &e.Pipeline, &e.Zone, &e.Class, &e.TrackID, &e.Score,
			&e.Box.X1, &e.Box.Y1, &e.Box.X2, &e.Box.Y2, &e.Width, &e.Height, &e.Count, &e.Previous, &dwell,
			&e.Frame, &e.Model, &e.Snapshot); err != nil {
			return nil, fmt.Errorf("event log query: %w", err)
		}
		e.Time, e.Dwell = time.UnixMilli(ms), time.Duration(dwell)*time.Millisecond
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

// trimAge deletes events older than MaxAge and their snapshots.
func (l *EventLog) trimAge(ctx context.Context, now time.Time) error {
	if l.cfg.MaxAge <= 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	cut := now.Add(-l.cfg.MaxAge).UnixMilli()
	for {
		rows, err := l.db.QueryContext(ctx, `SELECT id, snapshot, snapshot_bytes FROM pipeline_events WHERE time_ms < ? ORDER BY id LIMIT 500`, cut)
		if err != nil {
			return fmt.Errorf("age retention: %w", err)
		}
		ids, files, bytes, err := scanSnaps(rows)
		if err != nil || len(ids) == 0 {
			return err
		}
		if err := l.deleteRows(ctx, `DELETE FROM pipeline_events WHERE id = ?`, ids); err != nil {
			return err
		}
		l.removeFiles(files)
		l.snapBytes -= bytes
	}
}

// trimBytes deletes the oldest snapshots until the total fits; the events
// stay, without their snapshot.
func (l *EventLog) trimBytes(ctx context.Context) error {
	if l.cfg.MaxSnapshotBytes <= 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.snapBytes > l.cfg.MaxSnapshotBytes {
		rows, err := l.db.QueryContext(ctx, `SELECT id, snapshot, snapshot_bytes FROM pipeline_events WHERE snapshot_bytes > 0 ORDER BY id LIMIT 100`)
		if err != nil {
			return fmt.Errorf("snapshot retention: %w", err)
		}
		ids, files, sizes, err := scanSnapsEach(rows)
		if err != nil {
			return err
		}
		if len(ids) == 0 {
			l.snapBytes = 0
			return nil
		}
		// Oldest first, only as many as needed.
		n, freed := 0, int64(0)
		for n < len(ids) && l.snapBytes-freed > l.cfg.MaxSnapshotBytes {
			freed += sizes[n]
			n++
		}
		if err := l.deleteRows(ctx, `UPDATE pipeline_events SET snapshot = '', snapshot_bytes = 0 WHERE id = ?`, ids[:n]); err != nil {
			return err
		}
		l.removeFiles(files[:n])
		l.snapBytes -= freed
		l.deleted += int64(n)
	}
	return nil
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
		ids, files, sizes = append(ids, id), append(files, f), append(sizes, n)
	}
	return ids, files, sizes, rows.Err()
}
