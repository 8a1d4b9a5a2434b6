package testenv

import (
	"database/sql"
	"path/filepath"
	"testing"

	_ "github.com/mattn/go-sqlite3" // tests open the database the way appliance does
)

// DB opens a fresh SQLite database in t's temp dir with the pragmas ledge
// uses (WAL, foreign keys, busy timeout, immediate transactions); it is
// closed when the test ends.
func DB(t testing.TB) *sql.DB {
	t.Helper()
	return DBAt(t, filepath.Join(t.TempDir(), "ledge.db"))
}

// DBAt opens (or reopens, e.g. after a simulated crash) the database at path.
func DBAt(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_synchronous=FULL&_foreign_keys=on&_busy_timeout=10000&_txlock=immediate")
	if err != nil {
		t.Fatalf("testenv: open db: %v", err)
	}
	if err := db.Ping(); err != nil {
		t.Fatalf("testenv: open db: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
