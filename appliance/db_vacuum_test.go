package appliance

import (
	"path/filepath"
	"testing"
)

// A new database frees pages back to the file system on demand (the hub's
// queue runs incremental_vacuum as it drains).
func TestNewDatabaseIncrementalVacuum(t *testing.T) {
	db, err := OpenDB(t.Context(), filepath.Join(t.TempDir(), "l.db"), "full")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var mode int
	if err := db.QueryRow(`PRAGMA auto_vacuum`).Scan(&mode); err != nil || mode != 2 {
		t.Errorf("auto_vacuum %d (%v), want 2 (incremental)", mode, err)
	}
}
