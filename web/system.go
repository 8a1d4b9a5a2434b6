package web

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"time"

	"github.com/gin-gonic/gin"
)

// SystemInfo is the machine's state for GET /api/v1/system.
type SystemInfo struct {
	CPUPercent   float64   `json:"cpuPercent"`
	NumCPU       int       `json:"numCPU"`
	LoadAvg      []float64 `json:"loadAvg"`
	MemTotal     uint64    `json:"memTotal"`
	MemAvailable uint64    `json:"memAvailable"`
	ProcessRSS   uint64    `json:"processRSS"`
	DiskTotal    uint64    `json:"diskTotal"`
	DiskFree     uint64    `json:"diskFree"`
	// DiskLow says what a nearly full data disk stops, when it is.
	DiskLow      string   `json:"diskLow,omitempty"`
	TemperatureC *float64 `json:"temperatureC"` // nil when the board has no sensor
	Hostname     string   `json:"hostname"`
	// UncleanStop is the previous run when it did not stop cleanly
	// (killed or crashed); absent when it did.
	UncleanStop *UncleanStop `json:"uncleanStop,omitempty"`
}

// UncleanStop is a previous run of ledge that did not stop cleanly.
type UncleanStop struct {
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
	// LastSeen is when it was last known alive (within 30 s of its end).
	LastSeen time.Time `json:"lastSeen"`
}

// SystemSource reads SystemInfo (appliance implements it from /proc and
// /sys).
type SystemSource interface {
	System(ctx context.Context) SystemInfo
}

// system answers GET /api/v1/system.
func (s *Server) system(c *gin.Context) {
	var info SystemInfo
	if s.opts.System != nil {
		info = s.opts.System.System(c.Request.Context())
	}
	c.JSON(http.StatusOK, struct {
		SystemInfo
		Version   string    `json:"version"`
		DeviceID  string    `json:"deviceId"`
		GoVersion string    `json:"goVersion"`
		Uptime    string    `json:"uptime"`
		StartedAt time.Time `json:"startedAt"`
		Dev       bool      `json:"dev"`
	}{info, s.opts.Version, s.opts.DeviceID, runtime.Version(), uptimeText(time.Since(s.started)), s.started, s.opts.Dev})
}

// uptimeText is how long ledge has run, as people read it: Go's
// "13m39s" within a day, then days, hours and minutes ("3d2h15m") rather
// than "74h15m7s".
func uptimeText(d time.Duration) string {
	d = d.Round(time.Second)
	if d < 24*time.Hour {
		return d.String()
	}
	return fmt.Sprintf("%dd%dh%dm", d/(24*time.Hour), d%(24*time.Hour)/time.Hour, d%time.Hour/time.Minute)
}
