// Package migrate applies versioned SQL schema steps per component to the
// one SQLite database ledge keeps. Each component (hub, agent, pipeline
// event log, models, appliance) owns its tables and lists its steps,
// append-only: step i is version i+1. Applied versions are recorded in the
// table schema_migrations, so a step runs once per database.
//
// Apply is safe to call concurrently for different components; the
// database serialises the writes.
package migrate

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

const createTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
	component  TEXT    NOT NULL,
	version    INTEGER NOT NULL,
	applied_at TEXT    NOT NULL,
	PRIMARY KEY (component, version)
)`

// Apply runs the steps of component that the database has not seen, each
// in its own transaction together with its record. A database that has a
// newer version than steps knows (written by a newer ledge) is an error and
// nothing is changed.
func Apply(ctx context.Context, db *sql.DB, component string, steps []string) error {
	if _, err := db.ExecContext(ctx, createTable); err != nil {
		return fmt.Errorf("migrate %s: %w", component, err)
	}
	var have int
	err := db.QueryRowContext(ctx,
		`SELECT COALESCE(MAX(version), 0) FROM schema_migrations WHERE component = ?`, component).Scan(&have)
	if err != nil {
		return fmt.Errorf("migrate %s: read version: %w", component, err)
	}
	if have > len(steps) {
		return fmt.Errorf("migrate %s: the database is at version %d, this ledge knows %d: it was written by a newer ledge", component, have, len(steps))
	}
	for v := have + 1; v <= len(steps); v++ {
		if err := step(ctx, db, component, v, steps[v-1]); err != nil {
			return err
		}
	}
	return nil
}

func step(ctx context.Context, db *sql.DB, component string, version int, stmt string) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate %s to %d: %w", component, version, err)
	}
	defer tx.Rollback()
	// Another process may have applied it between the read and this
	// transaction.
	var done int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE component = ? AND version = ?`,
		component, version).Scan(&done); err != nil {
		return fmt.Errorf("migrate %s to %d: %w", component, version, err)
	}
	if done > 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, stmt); err != nil {
		return fmt.Errorf("migrate %s to %d: %w", component, version, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (component, version, applied_at) VALUES (?, ?, ?)`,
		component, version, time.Now().UTC().Format(time.RFC3339)); err != nil {
		return fmt.Errorf("migrate %s to %d: record: %w", component, version, err)
	}
	return tx.Commit()
}

// Version returns the schema version of component, 0 when none is applied.
func Version(ctx context.Context, db *sql.DB, component string) (int, error) {
	var v int
	err := db.QueryRowContext(ctx,
		`SELECT COALESCE(MAX(version), 0) FROM schema_migrations WHERE component = ?`, component).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("schema version of %s: %w", component, err)
	}
	return v, nil
}
