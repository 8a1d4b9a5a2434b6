package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ledge/agent/manifest"
)

// TestReadLimited: a file is read up to its limit; one over it, or one
// without end, is refused saying the limit in bytes and in the unit it
// is given in (a 64 KiB signature said "0 MiB").
func TestReadLimited(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, n int) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(strings.Repeat("a", n)), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if data, err := readLimited(write("sig", maxSignature), maxSignature, "signature"); err != nil || len(data) != maxSignature {
		t.Errorf("a signature of exactly the limit: %d bytes, %v", len(data), err)
	}
	for _, tc := range []struct {
		file  string
		limit int64
		what  string
		want  string
	}{
		{write("big.sig", maxSignature+1), maxSignature, "signature", "a signature is at most 65536 bytes (64 KiB); this one is longer"},
		{"/dev/zero", manifest.MaxSize, "manifest", "a manifest is at most 1048576 bytes (1 MiB); this one is longer"},
		{write("odd", 1001), 1000, "thing", "a thing is at most 1000 bytes (1000 B)"},
	} {
		if _, err := readLimited(tc.file, tc.limit, tc.what); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.file, err, tc.want)
		}
	}
}
