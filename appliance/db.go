package appliance

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"

	_ "github.com/mattn/go-sqlite3" // the one import of the SQLite driver

	"ledge/internal/migrate"
)

// OpenDB opens (creating it if needed) the SQLite database at path in WAL
// mode with foreign keys, a busy timeout and immediate write transactions,
// and applies the appliance's own migrations. Components apply theirs when
// they are handed the *sql.DB.
func OpenDB(ctx context.Context, path, synchronous string) (*sql.DB, error) {
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", synchronous)
	q.Set("_foreign_keys", "on")
	q.Set("_busy_timeout", "10000")
	q.Set("_txlock", "immediate")
	// New databases let freed pages go back to the file system (the hub's
	// store-and-forward queue runs incremental_vacuum as it drains).
	q.Set("_auto_vacuum", "incremental")
	if err := ownerOnly(path); err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	db, err := sql.Open("sqlite3", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		db.Close()
		return nil, fmt.Errorf("open database %s: journal mode is %q, want wal (%v)", path, mode, err)
	}
	if err := migrate.Apply(ctx, db, "appliance", migrations); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// ownerOnly makes the database file (made empty if it is not there:
// SQLite gives its -wal and -shm files the database's mode) and those
// files readable by their owner only: it holds every identity's keys,
// registry credentials and sessions.
func ownerOnly(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	f.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(p, fi.Mode().Perm()&^0o077); err != nil {
				return err
			}
		}
	}
	return nil
}

// migrations are the appliance's own tables, append-only.
var migrations = []string{
	// 1: facts about this installation (first start, ...).
	`CREATE TABLE appliance_meta (
		key   TEXT PRIMARY KEY,
		value TEXT NOT NULL
	)`,
	// 2: pipelines created from the dashboard or the API.
	`CREATE TABLE appliance_pipelines (
		name       TEXT PRIMARY KEY,
		spec       TEXT NOT NULL,
		updated_at TEXT NOT NULL
	)`,
}
