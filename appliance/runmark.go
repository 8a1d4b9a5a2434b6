package appliance

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"ledge/web"
)

// The run mark is <dataDir>/ledge.running: Run writes it (pid, start),
// touches it every runMarkEvery, and removes it when it stops cleanly. One
// left behind by a process that is gone means the previous run was killed
// or crashed; its last touch says when, within runMarkEvery.
const (
	runMarkFile  = "ledge.running"
	runMarkEvery = 30 * time.Second
)

type runMark struct {
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
}

// checkRunMark reports a previous run that did not stop cleanly (nil when
// it did, or when there was none), and writes this run's mark.
func (a *App) checkRunMark() *web.UncleanStop {
	path := filepath.Join(a.cfg.DataDir, runMarkFile)
	var prev *web.UncleanStop
	if data, err := os.ReadFile(path); err == nil {
		var m runMark
		fi, serr := os.Stat(path)
		if json.Unmarshal(data, &m) == nil && serr == nil && m.PID != os.Getpid() && !alive(m.PID) {
			prev = &web.UncleanStop{PID: m.PID, Started: m.Started, LastSeen: fi.ModTime()}
			a.log.Warn(fmt.Sprintf("the previous run (pid %d, started %s) did not stop cleanly (killed or crashed) at about %s; state restored from the database",
				m.PID, m.Started.Local().Format(time.DateTime), fi.ModTime().Local().Format(time.DateTime)),
				"pid", m.PID, "lastSeen", fi.ModTime())
		}
	}
	data, _ := json.Marshal(runMark{PID: os.Getpid(), Started: a.started})
	if err := os.WriteFile(path, data, 0o644); err != nil {
		a.log.Warn("cannot write the run mark: an unclean stop of this run will go unnoticed", "path", path, "err", err)
	}
	return prev
}

// touchRunMark refreshes the mark's time until ctx ends.
func (a *App) touchRunMark(ctx context.Context) {
	path := filepath.Join(a.cfg.DataDir, runMarkFile)
	t := time.NewTicker(runMarkEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			os.Chtimes(path, now, now)
		}
	}
}

// removeRunMark says this run stopped cleanly.
func (a *App) removeRunMark() {
	os.Remove(filepath.Join(a.cfg.DataDir, runMarkFile))
}

// alive reports whether process pid exists.
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || err == syscall.EPERM
}
