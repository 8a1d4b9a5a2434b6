package models

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// The store's SQL. Only this file (and schema.go) knows the tables.

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

const versionCols = `name, version, digest, size, kind, labels, input_width, input_height, url, signature, signer,
	state, error, created_at, ready_at, activated_at`

type scanner interface{ Scan(...any) error }

func scanVersion(r scanner) (Version, error) {
	var v Version
	var labels string
	var created, ready, activated int64
	err := r.Scan(&v.Name, &v.Version, &v.Digest, &v.Size, &v.Kind, &labels, &v.InputWidth, &v.InputHeight,
		&v.URL, &v.signature, &v.Signer, &v.State, &v.Error, &created, &ready, &activated)
	if err != nil {
		return v, err
	}
	if labels != "" {
		if err := json.Unmarshal([]byte(labels), &v.Labels); err != nil {
			return v, fmt.Errorf("labels of %s: %w", v.Ref(), err)
		}
	}
	v.CreatedAt, v.ReadyAt, v.ActivatedAt = fromMS(created), fromMS(ready), fromMS(activated)
	return v, nil
}

func (s *Store) insertVersion(ctx context.Context, v *Version) error {
	labels := ""
	if v.Labels != nil {
		b, _ := json.Marshal(v.Labels)
		labels = string(b)
	}
	_, err := s.db.ExecContext(ctx, `INSERT OR REPLACE INTO models_versions (`+versionCols+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		v.Name, v.Version, v.Digest, v.Size, v.Kind, labels, v.InputWidth, v.InputHeight, v.URL, v.signature, v.Signer,
		v.State, v.Error, ms(v.CreatedAt), ms(v.ReadyAt), ms(v.ActivatedAt))
	if err != nil {
		return fmt.Errorf("record %s: %w", v.Ref(), err)
	}
	return nil
}

// version returns name@version, or sql.ErrNoRows.
func (s *Store) version(ctx context.Context, name, version string) (Version, error) {
	row := s.db.QueryRowContext(ctx, `SELECT `+versionCols+` FROM models_versions WHERE name = ? AND version = ?`, name, version)
	return scanVersion(row)
}

// versions lists the versions of name ("" for every name), newest first.
func (s *Store) versions(ctx context.Context, name string) ([]Version, error) {
	q := `SELECT ` + versionCols + ` FROM models_versions`
	var args []any
	if name != "" {
		q += ` WHERE name = ?`
		args = append(args, name)
	}
	q += ` ORDER BY name, created_at DESC, version DESC`
	return s.queryVersions(ctx, q, args...)
}

func (s *Store) queryVersions(ctx context.Context, q string, args ...any) ([]Version, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list model versions: %w", err)
	}
	defer rows.Close()
	var out []Version
	for rows.Next() {
		v, err := scanVersion(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// setState moves name@version to state (with error text for failed).
func (s *Store) setState(ctx context.Context, name, version string, st State, msg string) error {
	ready := int64(0)
	q := `UPDATE models_versions SET state = ?, error = ? WHERE name = ? AND version = ?`
	args := []any{st, msg, name, version}
	if st == StateReady {
		ready = ms(time.Now())
		q = `UPDATE models_versions SET state = ?, error = ?, ready_at = CASE WHEN ready_at = 0 THEN ? ELSE ready_at END
			WHERE name = ? AND version = ?`
		args = []any{st, msg, ready, name, version}
	}
	if _, err := s.db.ExecContext(ctx, q, args...); err != nil {
		return fmt.Errorf("set state of %s@%s: %w", name, version, err)
	}
	return nil
}

// setReady marks name@version ready with the size of its stored file.
func (s *Store) setReady(ctx context.Context, name, version string, size int64) error {
	_, err := s.db.ExecContext(ctx, `UPDATE models_versions SET state = ?, error = '', size = CASE WHEN ? > 0 THEN ? ELSE size END,
		ready_at = CASE WHEN ready_at = 0 THEN ? ELSE ready_at END WHERE name = ? AND version = ?`,
		StateReady, size, size, ms(time.Now()), name, version)
	if err != nil {
		return fmt.Errorf("set state of %s@%s: %w", name, version, err)
	}
	return nil
}

// digestVersions lists the versions stored under digest in one of states.
func (s *Store) digestVersions(ctx context.Context, digest string, states ...State) ([]Version, error) {
	q := `SELECT ` + versionCols + ` FROM models_versions WHERE digest = ?`
	args := []any{digest}
	if len(states) > 0 {
		q += ` AND state IN (` + placeholders(len(states)) + `)`
		for _, st := range states {
			args = append(args, st)
		}
	}
	return s.queryVersions(ctx, q+` ORDER BY created_at`, args...)
}

func placeholders(n int) string {
	b := make([]byte, 0, 2*n)
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '?')
	}
	return string(b)
}

func (s *Store) deleteVersion(ctx context.Context, name, version string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM models_versions WHERE name = ? AND version = ?`, name, version); err != nil {
		return fmt.Errorf("delete %s@%s: %w", name, version, err)
	}
	return nil
}

// nameRow is a row of models_names.
type nameRow struct {
	name        string
	active      string
	activatedAt time.Time
	desired     string
	desiredSpec string
	pinned      bool
}

func (s *Store) names(ctx context.Context) (map[string]*nameRow, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, active, activated_at, desired, desired_spec, pinned FROM models_names`)
	if err != nil {
		return nil, fmt.Errorf("list models: %w", err)
	}
	defer rows.Close()
	out := map[string]*nameRow{}
	for rows.Next() {
		var r nameRow
		var at int64
		if err := rows.Scan(&r.name, &r.active, &at, &r.desired, &r.desiredSpec, &r.pinned); err != nil {
			return nil, err
		}
		r.activatedAt = fromMS(at)
		out[r.name] = &r
	}
	return out, rows.Err()
}

func (s *Store) nameRow(ctx context.Context, name string) (*nameRow, error) {
	var r nameRow
	var at int64
	err := s.db.QueryRowContext(ctx, `SELECT name, active, activated_at, desired, desired_spec, pinned FROM models_names WHERE name = ?`, name).
		Scan(&r.name, &r.active, &at, &r.desired, &r.desiredSpec, &r.pinned)
	if errors.Is(err, sql.ErrNoRows) {
		return &nameRow{name: name}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read model %s: %w", name, err)
	}
	r.activatedAt = fromMS(at)
	return &r, nil
}

func (s *Store) ensureName(ctx context.Context, name string) error {
	if _, err := s.db.ExecContext(ctx, `INSERT OR IGNORE INTO models_names (name) VALUES (?)`, name); err != nil {
		return fmt.Errorf("record model %s: %w", name, err)
	}
	return nil
}

// setDesiredRow records what the deployment asks for name; a changed
// entry clears the pin.
func (s *Store) setDesiredRow(ctx context.Context, name, version, spec string, unpin bool) error {
	if err := s.ensureName(ctx, name); err != nil {
		return err
	}
	q := `UPDATE models_names SET desired = ?, desired_spec = ? WHERE name = ?`
	if unpin {
		q = `UPDATE models_names SET desired = ?, desired_spec = ?, pinned = 0 WHERE name = ?`
	}
	if _, err := s.db.ExecContext(ctx, q, version, spec, name); err != nil {
		return fmt.Errorf("record desired %s@%s: %w", name, version, err)
	}
	return nil
}

// recordActivation makes version the active one of name, in one
// transaction with its history line.
func (s *Store) recordActivation(ctx context.Context, name, version, reason string, pinned bool, at time.Time) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("activate %s@%s: %w", name, version, err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO models_names (name) VALUES (?)`, name); err != nil {
		return fmt.Errorf("activate %s@%s: %w", name, version, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE models_names SET active = ?, activated_at = ?, pinned = ? WHERE name = ?`,
		version, ms(at), pinned, name); err != nil {
		return fmt.Errorf("activate %s@%s: %w", name, version, err)
	}
	if version != "" {
		if _, err := tx.ExecContext(ctx, `UPDATE models_versions SET activated_at = ?, state = ?, error = '' WHERE name = ? AND version = ?`,
			ms(at), StateReady, name, version); err != nil {
			return fmt.Errorf("activate %s@%s: %w", name, version, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO models_activations (name, version, at, reason) VALUES (?, ?, ?, ?)`,
		name, version, ms(at), reason); err != nil {
		return fmt.Errorf("activate %s@%s: %w", name, version, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("activate %s@%s: %w", name, version, err)
	}
	return nil
}

// activeByHand says whether name's active version was activated by hand
// (activate, rollback, pull --activate), not by a deployment.
func (s *Store) activeByHand(ctx context.Context, name string) (bool, error) {
	var reason string
	err := s.db.QueryRowContext(ctx, `SELECT reason FROM models_activations WHERE name = ? ORDER BY id DESC LIMIT 1`, name).Scan(&reason)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("activations of %s: %w", name, err)
	}
	return reason != reasonDeployment, nil
}

// activationHistory lists the versions name was activated at, newest
// first (a version may appear more than once).
func (s *Store) activationHistory(ctx context.Context, name string, limit int) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT version FROM models_activations WHERE name = ? ORDER BY id DESC LIMIT ?`, name, limit)
	if err != nil {
		return nil, fmt.Errorf("activation history of %s: %w", name, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// trimHistory keeps the newest keep lines of name's activation history.
func (s *Store) trimHistory(ctx context.Context, name string, keep int) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM models_activations WHERE name = ? AND id NOT IN
		(SELECT id FROM models_activations WHERE name = ? ORDER BY id DESC LIMIT ?)`, name, name, keep)
	return err
}

// deleteName forgets a name with no versions left.
func (s *Store) deleteName(ctx context.Context, name string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM models_names WHERE name = ? AND active = '' AND desired = ''
		AND NOT EXISTS (SELECT 1 FROM models_versions WHERE name = ?)`, name, name)
	return err
}
