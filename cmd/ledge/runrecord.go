package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"
)

// runRecord is what a running `ledge run` leaves in the per-user runtime
// folder (see runtimeDir), so that the CLI finds it without flags from any
// folder: its data dir, socket and config file.
type runRecord struct {
	PID     int       `json:"pid"`
	Config  string    `json:"config,omitempty"` // absolute path, "" for the defaults
	DataDir string    `json:"dataDir"`
	Socket  string    `json:"socket"`
	HTTP    string    `json:"http"`
	Started time.Time `json:"started"`
}

// runtimeDir is where running ledges leave their records:
// $LEDGE_RUNTIME_DIR, else $XDG_RUNTIME_DIR/ledge, else /run/ledge for
// root and $TMPDIR/ledge-UID for other users.
func runtimeDir() string {
	if d := os.Getenv("LEDGE_RUNTIME_DIR"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "ledge")
	}
	if os.Geteuid() == 0 {
		return "/run/ledge"
	}
	return filepath.Join(os.TempDir(), "ledge-"+strconv.Itoa(os.Geteuid()))
}

// writeRunRecord records this process; the returned func removes the
// record.
func writeRunRecord(rec runRecord) (func(), error) {
	dir := runtimeDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, strconv.Itoa(rec.PID)+".json")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o600); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return nil, err
	}
	return func() { os.Remove(path) }, nil
}

// runningLedges returns the records of the ledges that run now, the last
// started first; records of processes that are gone are removed.
func runningLedges() []runRecord {
	dir := runtimeDir()
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	var out []runRecord
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var rec runRecord
		if json.Unmarshal(data, &rec) != nil || rec.PID <= 0 || rec.Socket == "" {
			continue
		}
		if !alive(rec.PID) {
			os.Remove(f) // left by a ledge that was killed
			continue
		}
		if _, err := os.Stat(rec.Socket); err != nil {
			continue
		}
		out = append(out, rec)
	}
	slices.SortFunc(out, func(a, b runRecord) int { return b.Started.Compare(a.Started) })
	return out
}

// lastRunning is the ledge started last among those that run, or nil.
// With several, it says on stderr which one it took, when note.
func lastRunning(note bool) *runRecord {
	recs := runningLedges()
	if len(recs) == 0 {
		return nil
	}
	if len(recs) > 1 && note {
		fmt.Fprintf(os.Stderr, "ledge: %d ledges run; using the one started last (pid %d, data dir %s); --config or --data-dir picks another\n",
			len(recs), recs[0].PID, recs[0].DataDir)
	}
	return &recs[0]
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
