package agent

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"ledge/internal/migrate"
)

// migrations are the agent's tables, append-only.
var migrations = []string{
	// 1: deployments as received, with their fate.
	`CREATE TABLE agent_deployments (
		id           INTEGER PRIMARY KEY AUTOINCREMENT,
		version      TEXT    NOT NULL,
		digest       TEXT    NOT NULL,
		source       TEXT    NOT NULL,
		format       TEXT    NOT NULL,
		manifest     BLOB    NOT NULL,
		signature    BLOB,
		signer       TEXT    NOT NULL DEFAULT '',
		received_at  TEXT    NOT NULL,
		state        TEXT    NOT NULL,
		reason       TEXT    NOT NULL DEFAULT '',
		converged_at TEXT    NOT NULL DEFAULT '',
		good         INTEGER NOT NULL DEFAULT 0,
		prev_id      INTEGER
	)`,
	// 2: current pointers and source bookkeeping.
	`CREATE TABLE agent_state (
		key   TEXT PRIMARY KEY,
		value TEXT NOT NULL
	)`,
	// 3: per-module restart statistics, so back-off survives a restart.
	`CREATE TABLE agent_modules (
		name TEXT PRIMARY KEY,
		data TEXT NOT NULL
	)`,
	// 4: the last reported state.
	`CREATE TABLE agent_reported (
		id         INTEGER PRIMARY KEY CHECK (id = 1),
		data       TEXT NOT NULL,
		updated_at TEXT NOT NULL
	)`,
}

// Deployment states.
const (
	StateApplying   = "applying"    // current, not yet converged
	StateConverged  = "converged"   // current, every module and section as asked
	StateFailed     = "failed"      // did not converge and could not be rolled back
	StateRolledBack = "rolled-back" // did not converge; the last good one runs again
	StateSuperseded = "superseded"  // a newer deployment replaced it
)

// Deployment is one deployment as stored.
type Deployment struct {
	ID          int64     `json:"id"`
	Version     string    `json:"version"`
	Digest      string    `json:"digest"`
	Source      string    `json:"source"`
	Format      string    `json:"format"`
	Signer      string    `json:"signer,omitempty"`
	ReceivedAt  time.Time `json:"receivedAt"`
	State       string    `json:"state"`
	Reason      string    `json:"reason,omitempty"`
	ConvergedAt time.Time `json:"convergedAt,omitzero"`
	Good        bool      `json:"good"`
	PrevID      int64     `json:"prevId,omitempty"`

	Manifest  []byte `json:"-"`
	Signature []byte `json:"-"`
}

// store is the agent's SQLite persistence. Safe for concurrent use (the
// database serialises writes).
type store struct {
	db *sql.DB
}

func openStore(ctx context.Context, db *sql.DB) (*store, error) {
	if err := migrate.Apply(ctx, db, "agent", migrations); err != nil {
		return nil, err
	}
	return &store{db: db}, nil
}

const timeFmt = time.RFC3339Nano

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(timeFmt)
}

func parseTime(s string) time.Time {
	t, _ := time.Parse(timeFmt, s)
	return t
}

// insertCurrent stores a new deployment and makes it current, in one
// transaction: once it returns, the deployment survives a crash.
func (s *store) insertCurrent(ctx context.Context, d *Deployment) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store deployment: %w", err)
	}
	defer tx.Rollback()
	var prev sql.NullInt64
	if cur, err := getState(ctx, tx, "current"); err == nil && cur != "" {
		var id int64
		fmt.Sscan(cur, &id)
		prev = sql.NullInt64{Int64: id, Valid: true}
		if _, err := tx.ExecContext(ctx, `UPDATE agent_deployments SET state = ? WHERE id = ? AND state IN (?, ?)`,
			StateSuperseded, id, StateApplying, StateConverged); err != nil {
			return fmt.Errorf("store deployment: %w", err)
		}
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO agent_deployments
		(version, digest, source, format, manifest, signature, signer, received_at, state, prev_id)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		d.Version, d.Digest, d.Source, d.Format, d.Manifest, d.Signature, d.Signer, fmtTime(d.ReceivedAt), StateApplying, prev)
	if err != nil {
		return fmt.Errorf("store deployment: %w", err)
	}
	d.ID, _ = res.LastInsertId()
	d.State = StateApplying
	if prev.Valid {
		d.PrevID = prev.Int64
	}
	if err := setState(ctx, tx, "current", fmt.Sprint(d.ID)); err != nil {
		return err
	}
	return tx.Commit()
}

// makeCurrent points current at an existing deployment (a rollback),
// marking the one it replaces with state and reason.
func (s *store) makeCurrent(ctx context.Context, id int64, oldState, reason string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("rollback: %w", err)
	}
	defer tx.Rollback()
	if cur, err := getState(ctx, tx, "current"); err == nil && cur != "" && cur != fmt.Sprint(id) {
		if _, err := tx.ExecContext(ctx, `UPDATE agent_deployments SET state = ?, reason = ? WHERE id = ?`, oldState, reason, cur); err != nil {
			return fmt.Errorf("rollback: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE agent_deployments SET state = ?, reason = '' WHERE id = ?`, StateApplying, id); err != nil {
		return fmt.Errorf("rollback: %w", err)
	}
	if err := setState(ctx, tx, "current", fmt.Sprint(id)); err != nil {
		return err
	}
	return tx.Commit()
}

// setOutcome records a deployment's state; converged also marks it good.
func (s *store) setOutcome(ctx context.Context, id int64, state, reason string, at time.Time) error {
	var err error
	if state == StateConverged {
		_, err = s.db.ExecContext(ctx, `UPDATE agent_deployments SET state = ?, reason = '', converged_at = ?, good = 1 WHERE id = ?`,
			state, fmtTime(at), id)
	} else {
		_, err = s.db.ExecContext(ctx, `UPDATE agent_deployments SET state = ?, reason = ? WHERE id = ?`, state, reason, id)
	}
	if err != nil {
		return fmt.Errorf("record deployment %d %s: %w", id, state, err)
	}
	return nil
}

const deploymentCols = `id, version, digest, source, format, manifest, signature, signer, received_at, state, reason, converged_at, good, prev_id`

func scanDeployment(row interface{ Scan(...any) error }) (*Deployment, error) {
	var d Deployment
	var received, converged string
	var prev sql.NullInt64
	if err := row.Scan(&d.ID, &d.Version, &d.Digest, &d.Source, &d.Format, &d.Manifest, &d.Signature, &d.Signer,
		&received, &d.State, &d.Reason, &converged, &d.Good, &prev); err != nil {
		return nil, err
	}
	d.ReceivedAt, d.ConvergedAt, d.PrevID = parseTime(received), parseTime(converged), prev.Int64
	return &d, nil
}

// current returns the current deployment, or nil when none was ever
// applied.
func (s *store) current(ctx context.Context) (*Deployment, error) {
	cur, err := getState(ctx, s.db, "current")
	if err != nil || cur == "" {
		return nil, err
	}
	return s.get(ctx, cur)
}

func (s *store) get(ctx context.Context, id any) (*Deployment, error) {
	d, err := scanDeployment(s.db.QueryRowContext(ctx, `SELECT `+deploymentCols+` FROM agent_deployments WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read deployment %v: %w", id, err)
	}
	return d, nil
}

// lastGoodBefore walks back from deployment id along the deployments that
// preceded it and returns the first that converged, or nil.
func (s *store) lastGoodBefore(ctx context.Context, id int64) (*Deployment, error) {
	d, err := s.get(ctx, id)
	for i := 0; err == nil && d != nil && i < 1000; i++ {
		if d.PrevID == 0 {
			return nil, nil
		}
		if d, err = s.get(ctx, d.PrevID); err == nil && d != nil && d.Good && d.ID != id {
			return d, nil
		}
	}
	return nil, err
}

// history lists the most recent deployments, newest first.
func (s *store) history(ctx context.Context, limit int) ([]Deployment, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+deploymentCols+` FROM agent_deployments ORDER BY id DESC LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("deployment history: %w", err)
	}
	defer rows.Close()
	var out []Deployment
	for rows.Next() {
		d, err := scanDeployment(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *d)
	}
	return out, rows.Err()
}

// prune keeps the newest keep deployments plus the current one and every
// one the current chain could roll back to.
func (s *store) prune(ctx context.Context, keep int) error {
	cur, err := s.current(ctx)
	if err != nil || cur == nil {
		return err
	}
	protect := map[int64]bool{cur.ID: true}
	if g, err := s.lastGoodBefore(ctx, cur.ID); err == nil && g != nil {
		protect[g.ID] = true
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM agent_deployments ORDER BY id DESC LIMIT -1 OFFSET ?`, keep)
	if err != nil {
		return err
	}
	var drop []int64
	for rows.Next() {
		var id int64
		if rows.Scan(&id) == nil && !protect[id] {
			drop = append(drop, id)
		}
	}
	rows.Close()
	for _, id := range drop {
		if _, err := s.db.ExecContext(ctx, `DELETE FROM agent_deployments WHERE id = ?`, id); err != nil {
			return err
		}
	}
	return nil
}

type querier interface {
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

func getState(ctx context.Context, q querier, key string) (string, error) {
	var v string
	err := q.QueryRowContext(ctx, `SELECT value FROM agent_state WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("agent state %s: %w", key, err)
	}
	return v, nil
}

type execer interface {
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
}

func setState(ctx context.Context, e execer, key, value string) error {
	if _, err := e.ExecContext(ctx, `INSERT INTO agent_state (key, value) VALUES (?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value); err != nil {
		return fmt.Errorf("agent state %s: %w", key, err)
	}
	return nil
}

func (s *store) state(ctx context.Context, key string) (string, error) {
	return getState(ctx, s.db, key)
}
func (s *store) setState(ctx context.Context, key, value string) error {
	return setState(ctx, s.db, key, value)
}

// moduleStats are the restart statistics of one module.
type moduleStats struct {
	ContainerID  string    `json:"containerId,omitempty"`
	RestartCount int       `json:"restartCount"`
	ExitCode     int       `json:"exitCode"`
	LastStart    time.Time `json:"lastStart,omitzero"`
	LastExit     time.Time `json:"lastExit,omitzero"`
	LastRestart  time.Time `json:"lastRestart,omitzero"`
	NextRestart  time.Time `json:"nextRestart,omitzero"`
	Status       string    `json:"status,omitempty"`
	Description  string    `json:"description,omitempty"`
}

func (s *store) loadModules(ctx context.Context) (map[string]moduleStats, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, data FROM agent_modules`)
	if err != nil {
		return nil, fmt.Errorf("module stats: %w", err)
	}
	defer rows.Close()
	out := map[string]moduleStats{}
	for rows.Next() {
		var name, data string
		if err := rows.Scan(&name, &data); err != nil {
			return nil, err
		}
		var ms moduleStats
		if json.Unmarshal([]byte(data), &ms) == nil {
			out[name] = ms
		}
	}
	return out, rows.Err()
}

func (s *store) saveModule(ctx context.Context, name string, ms moduleStats) error {
	data, _ := json.Marshal(ms)
	if _, err := s.db.ExecContext(ctx, `INSERT INTO agent_modules (name, data) VALUES (?, ?)
		ON CONFLICT (name) DO UPDATE SET data = excluded.data`, name, string(data)); err != nil {
		return fmt.Errorf("save module %s: %w", name, err)
	}
	return nil
}

func (s *store) deleteModule(ctx context.Context, name string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM agent_modules WHERE name = ?`, name)
	return err
}

func (s *store) saveReported(ctx context.Context, data []byte) error {
	if _, err := s.db.ExecContext(ctx, `INSERT INTO agent_reported (id, data, updated_at) VALUES (1, ?, ?)
		ON CONFLICT (id) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at`,
		string(data), fmtTime(time.Now())); err != nil {
		return fmt.Errorf("save reported state: %w", err)
	}
	return nil
}
