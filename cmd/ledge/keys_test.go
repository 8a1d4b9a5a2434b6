package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestKeysGenName: `ledge keys gen fleet.key` wrote ledge-deploy.key and
// ledge-deploy.pub in the current folder and said nothing of the name it
// was given. The name is taken as --out is (a .key or .pub ending
// dropped); two names, or a name and --out, are a usage error that
// writes nothing.
func TestKeysGenName(t *testing.T) {
	dir := t.TempDir()
	if out, errOut, code := ledgeIn(t, dir, nil, "keys", "gen", "fleet.key"); code != 0 {
		t.Fatalf("keys gen fleet.key: exit %d\n%s%s", code, out, errOut)
	}
	for _, f := range []string{"fleet.key", "fleet.pub"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("keys gen fleet.key did not write %s: %v", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "ledge-deploy.key")); err == nil {
		t.Errorf("keys gen fleet.key wrote ledge-deploy.key")
	}
	for _, args := range [][]string{{"a", "b"}, {"--out", "c", "d"}} {
		if _, _, code := ledgeIn(t, dir, nil, append([]string{"keys", "gen"}, args...)...); code != 2 {
			t.Errorf("keys gen %v: exit %d, want 2 (usage)", args, code)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Errorf("after the usage errors the folder holds %d files, want fleet.key and fleet.pub", len(ents))
	}
}
