package migrate

import (
	"strings"
	"testing"

	"ledge/internal/testenv"
)

func TestApply(t *testing.T) {
	db := testenv.DB(t)
	ctx := t.Context()
	steps := []string{
		`CREATE TABLE a (x INTEGER)`,
		`ALTER TABLE a ADD COLUMN y TEXT; CREATE INDEX a_y ON a (y)`,
	}
	if err := Apply(ctx, db, "comp", steps[:1]); err != nil {
		t.Fatal(err)
	}
	if v, _ := Version(ctx, db, "comp"); v != 1 {
		t.Fatalf("version %d, want 1", v)
	}
	// Re-applying is a no-op; a new step runs once.
	for range 2 {
		if err := Apply(ctx, db, "comp", steps); err != nil {
			t.Fatal(err)
		}
	}
	if v, _ := Version(ctx, db, "comp"); v != 2 {
		t.Fatalf("version %d, want 2", v)
	}
	if _, err := db.Exec(`INSERT INTO a (x, y) VALUES (1, 'z')`); err != nil {
		t.Fatalf("migrated table: %v", err)
	}
	// Components are independent.
	if v, _ := Version(ctx, db, "other"); v != 0 {
		t.Fatalf("other component at %d", v)
	}
	// An older ledge refuses a newer database and changes nothing.
	err := Apply(ctx, db, "comp", steps[:1])
	if err == nil || !strings.Contains(err.Error(), "newer ledge") {
		t.Fatalf("older steps on newer db: %v", err)
	}
}

func TestApplyFailedStepRollsBack(t *testing.T) {
	db := testenv.DB(t)
	steps := []string{`CREATE TABLE b (x INTEGER); CREATE TABLE b (y INTEGER)`}
	err := Apply(t.Context(), db, "comp", steps)
	if err == nil || !strings.Contains(err.Error(), "migrate comp to 1") {
		t.Fatalf("err %v", err)
	}
	if v, _ := Version(t.Context(), db, "comp"); v != 0 {
		t.Errorf("version %d after a failed step, want 0", v)
	}
	var n int
	db.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE name = 'b'`).Scan(&n)
	if n != 0 {
		t.Error("table b left behind by a failed step")
	}
}
