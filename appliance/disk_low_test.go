package appliance

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"ledge/internal/testenv"
)

// TestDataDiskLowSaysSo: the data dir on a real 128 MB tmpfs, filled
// until under 64 MiB are free: the log says so once with what it stops
// and where, /api/v1/system carries the reason (the Overview and ledge
// status show it), and the log says when there is room again.
func TestDataDiskLowSaysSo(t *testing.T) {
	dir := testenv.Tmpfs(t, "128m")
	cfg := testConfig(t)
	cfg.DataDir = dir
	cfg.Hub.Enabled = false
	u := startAppliance(t, cfg)
	if why := u.app.system.System(t.Context()).DiskLow; why != "" {
		t.Fatalf("an empty 128 MB disk is reported low: %s", why)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * st.Bsize
	filler := filepath.Join(dir, "filler")
	if err := os.WriteFile(filler, make([]byte, free-40<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "the log to say the disk is low", func() bool { return strings.Contains(u.logs.String(), "data disk failing") })
	why := u.app.system.System(t.Context()).DiskLow
	if !strings.Contains(why, "MiB free on the data dir's file system ("+dir+")") || !strings.Contains(why, "free space there") {
		t.Errorf("/api/v1/system diskLow = %q", why)
	}
	os.Remove(filler)
	waitUntil(t, 30*time.Second, "the log to say the disk has room again", func() bool { return strings.Contains(u.logs.String(), "data disk recovered") })
	if n := strings.Count(u.logs.String(), "data disk failing"); n != 1 {
		t.Errorf("the low disk is logged %d times, want once", n)
	}
	if why := u.app.system.System(t.Context()).DiskLow; why != "" {
		t.Errorf("diskLow after the file went: %q", why)
	}
}
