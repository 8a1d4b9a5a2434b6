package pipeline

import (
	"errors"
	"fmt"
	"time"
)

// Config is the engine-wide part of ledge.yaml, under pipeline:.
type Config struct {
	// SnapshotDir holds snapshot JPEGs (default: <dataDir>/snapshots, set by
	// the appliance).
	SnapshotDir string `yaml:"snapshotDir" json:"snapshotDir"`
	// EventLog sets the retention of the event log and its snapshots.
	EventLog EventLogConfig `yaml:"eventLog" json:"eventLog"`
	// Detector is the default ONNX Runtime session layout of a model:
	// Sessions sessions (default: one per core) of Threads intra-op
	// threads each (default 1), the layout measured fastest for
	// throughput.
	Detector DetectorConfig `yaml:"detector" json:"detector"`
	// WatchFPS caps the frame rate of annotated frames for viewers
	// (default 10).
	WatchFPS float64 `yaml:"watchFps" json:"watchFps"`
}

// EventLogConfig bounds the event log.
type EventLogConfig struct {
	// MaxAge deletes events (and their snapshots) older than this (default
	// 7 days; 0 keeps them forever).
	MaxAge time.Duration `yaml:"maxAge" json:"maxAge"`
	// MaxSnapshotBytes deletes the oldest snapshots when all of them
	// together take more (default 1 GiB; 0: no limit).
	MaxSnapshotBytes int64 `yaml:"maxSnapshotBytes" json:"maxSnapshotBytes"`
	// MinFreeBytes is kept free on the snapshot dir's file system: before
	// a snapshot is written the oldest go until it fits above it, and with
	// none left to delete the snapshot is not written (default 128 MiB,
	// above the hub queue's and the model store's reserves, so snapshots
	// give way to them; 0: no floor).
	MinFreeBytes int64 `yaml:"minFreeBytes" json:"minFreeBytes"`
	// Interval is how often age retention runs (default 1m); the byte limit
	// is checked after every snapshot.
	Interval time.Duration `yaml:"interval" json:"interval"`
}

// DetectorConfig is a session layout.
type DetectorConfig struct {
	Sessions int `yaml:"sessions" json:"sessions"`
	Threads  int `yaml:"threads" json:"threads"`
}

// DefaultConfig returns the engine defaults. SnapshotDir is left empty:
// the appliance puts it in its data dir.
func DefaultConfig() Config {
	return Config{
		EventLog: EventLogConfig{MaxAge: 7 * 24 * time.Hour, MaxSnapshotBytes: 1 << 30, MinFreeBytes: 128 << 20, Interval: time.Minute},
		WatchFPS: 10,
	}
}

// Validate checks the values, naming the field under pipeline.
func (c Config) Validate() error {
	var errs []error
	bad := func(f, format string, args ...any) {
		errs = append(errs, fmt.Errorf("pipeline.%s: "+format, append([]any{f}, args...)...))
	}
	if c.EventLog.MaxAge < 0 {
		bad("eventLog.maxAge", "must not be negative, got %s", c.EventLog.MaxAge)
	}
	if c.EventLog.MaxSnapshotBytes < 0 {
		bad("eventLog.maxSnapshotBytes", "must not be negative, got %d", c.EventLog.MaxSnapshotBytes)
	}
	if c.EventLog.MinFreeBytes < 0 {
		bad("eventLog.minFreeBytes", "must not be negative, got %d", c.EventLog.MinFreeBytes)
	}
	if c.EventLog.Interval < 0 {
		bad("eventLog.interval", "must not be negative, got %s", c.EventLog.Interval)
	}
	if c.Detector.Sessions < 0 || c.Detector.Sessions > 64 {
		bad("detector.sessions", "%d: want 1..64", c.Detector.Sessions)
	}
	if c.Detector.Threads < 0 || c.Detector.Threads > 256 {
		bad("detector.threads", "%d: want 1..256", c.Detector.Threads)
	}
	if !inRange(c.WatchFPS, 0, 120) {
		bad("watchFps", "%v: want 0..120", c.WatchFPS)
	}
	return errors.Join(errs...)
}
