package appliance

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"ledge/internal/outage"
	"ledge/web"
)

// systemReader reads the machine's state from /proc and /sys for the
// dashboard. Safe for concurrent use.
type systemReader struct {
	dataDir string
	// unclean is the previous run that did not stop cleanly (nil: none).
	unclean atomic.Pointer[web.UncleanStop]

	mu        sync.Mutex // guards lastTotal, lastIdle
	lastTotal uint64
	lastIdle  uint64
}

// System implements web.SystemSource. CPU percent is over the time since
// the previous call (the first call: since boot).
func (s *systemReader) System(ctx context.Context) web.SystemInfo {
	info := web.SystemInfo{NumCPU: runtime.NumCPU()}
	info.Hostname, _ = os.Hostname()
	info.CPUPercent = s.cpuPercent()
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		for _, f := range strings.Fields(string(data))[:3] {
			v, _ := strconv.ParseFloat(f, 64)
			info.LoadAvg = append(info.LoadAvg, v)
		}
	}
	mem := readKV("/proc/meminfo")
	info.MemTotal, info.MemAvailable = mem["MemTotal"]*1024, mem["MemAvailable"]*1024
	info.ProcessRSS = readKV("/proc/self/status")["VmRSS"] * 1024
	var st syscall.Statfs_t
	if syscall.Statfs(s.dataDir, &st) == nil {
		info.DiskTotal = st.Blocks * uint64(st.Bsize)
		info.DiskFree = st.Bavail * uint64(st.Bsize)
		info.DiskLow = diskLow(s.dataDir, info.DiskFree)
	}
	info.TemperatureC = temperature()
	info.UncleanStop = s.unclean.Load()
	return info
}

// lowDiskBytes is the free space under which the data disk is reported
// low: twice the 32 MiB the hub's queue and the model store leave free, so
// the warning comes before they refuse.
const lowDiskBytes = 64 << 20

// diskLow says why a data disk with free bytes left is a problem, or "".
func diskLow(dataDir string, free uint64) string {
	if free >= lowDiskBytes {
		return ""
	}
	return fmt.Sprintf("only %s free on the data dir's file system (%s): ledge stops storing queued messages and models below 32 MiB, and events and snapshots when it is full; free space there",
		mib(free), dataDir)
}

func mib(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// watchDisk logs once when the data disk runs low and once when it has
// room again (checked every 10 s).
func (s *systemReader) watchDisk(ctx context.Context, log *slog.Logger) error {
	out := outage.New(log, "data disk", 0)
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		var st syscall.Statfs_t
		if syscall.Statfs(s.dataDir, &st) == nil {
			if why := diskLow(s.dataDir, st.Bavail*uint64(st.Bsize)); why != "" {
				out.Fail(why)
			} else {
				out.OK()
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (s *systemReader) cpuPercent() float64 {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := bytes.Cut(data, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 5 || f[0] != "cpu" {
		return 0
	}
	var total, idle uint64
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		total += n
		if i == 3 || i == 4 { // idle, iowait
			idle += n
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	dt, di := total-s.lastTotal, idle-s.lastIdle
	s.lastTotal, s.lastIdle = total, idle
	if dt == 0 {
		return 0
	}
	return 100 * float64(dt-di) / float64(dt)
}

// readKV reads "Key: value kB" files such as /proc/meminfo (values in kB).
func readKV(path string) map[string]uint64 {
	out := map[string]uint64{}
	f, err := os.Open(path)
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		n, err := strconv.ParseUint(fields[0], 10, 64)
		if err == nil {
			out[k] = n
		}
	}
	return out
}

// temperature returns the hottest thermal zone in °C, or nil without any
// (VMs have none; a Raspberry Pi has cpu-thermal, a Jetson several).
func temperature() *float64 {
	zones, _ := filepath.Glob("/sys/class/thermal/thermal_zone*/temp")
	var best *float64
	for _, z := range zones {
		data, err := os.ReadFile(z)
		if err != nil {
			continue
		}
		milli, err := strconv.ParseFloat(strings.TrimSpace(string(data)), 64)
		if err != nil || milli <= 0 {
			continue
		}
		c := milli / 1000
		if best == nil || c > *best {
			best = &c
		}
	}
	return best
}
