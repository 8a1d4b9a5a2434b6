package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"ledge/appliance"
)

// configFlags are the flags every command that reads ledge.yaml shares.
type configFlags struct {
	path    string
	dataDir string

	// loaded is what load found, for the command's next call: a command
	// that loads and then connects (status, deploy, models) finds the
	// running ledge once, says once which of several it took, and talks
	// to the one whose data dir it reports.
	loaded *loaded
}

func (c *configFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.path, "config", "", "config file (default: $LEDGE_CONFIG, else the running ledge's, else ./ledge.yaml or /etc/ledge/ledge.yaml, the first that exists)")
	fs.StringVar(&c.dataDir, "data-dir", "", "data directory (overrides dataDir in the config)")
}

// registerForRun is register for `ledge run`, which never follows another
// running ledge (loadForRun).
func (c *configFlags) registerForRun(fs *flag.FlagSet) {
	fs.StringVar(&c.path, "config", "", "config file (default: $LEDGE_CONFIG, ./ledge.yaml or /etc/ledge/ledge.yaml, the first that exists; else the defaults)")
	fs.StringVar(&c.dataDir, "data-dir", "", "data directory (overrides dataDir in the config)")
}

// loaded is a config and where it came from.
type loaded struct {
	appliance.Config
	// File is the config file read ("" for the defaults).
	File string
	// Running is the record of the running ledge it belongs to, when the
	// CLI found it that way.
	Running *runRecord
	// Flag is set when --data-dir chose the data dir.
	Flag bool
	// Env is set when $LEDGE_CONFIG named File.
	Env bool
}

// from says where the data dir came from, for messages.
func (l *loaded) from() string {
	switch {
	case l.Flag:
		return "--data-dir"
	case l.Running != nil:
		return fmt.Sprintf("the running ledge (pid %d)", l.Running.PID)
	case l.Env:
		return "$LEDGE_CONFIG=" + l.File
	case l.File != "":
		return l.File
	}
	return "the defaults"
}

// load finds and reads the config, for a command that acts on a ledge:
// --config, $LEDGE_CONFIG and --data-dir first, then the ledge that runs
// (the last `ledge run` still alive), then ./ledge.yaml and
// /etc/ledge/ledge.yaml; with no file anywhere, the defaults.
func (c *configFlags) load() (*loaded, error) {
	if c.loaded != nil {
		return c.loaded, nil
	}
	l, err := c.find(true, true)
	if err == nil {
		c.loaded = l
	}
	return l, err
}

// loadSettings is load for a command that only reads settings (the ONNX
// Runtime library for version and detect): which of several running
// ledges it took is not worth a word.
func (c *configFlags) loadSettings() (*loaded, error) { return c.find(true, false) }

// loadForRun is load for `ledge run` itself, which never follows
// another running ledge.
func (c *configFlags) loadForRun() (*loaded, error) { return c.find(false, false) }

func (c *configFlags) find(followRunning, note bool) (*loaded, error) {
	path, env := c.path, false
	if path == "" {
		// $LEDGE_CONFIG names a ledge as --config does: with two on the
		// machine, a shell that sets it keeps to its own.
		path = os.Getenv("LEDGE_CONFIG")
		env = path != ""
	}
	if path == "" && c.dataDir == "" && followRunning {
		if rec := lastRunning(note); rec != nil {
			l := &loaded{Config: appliance.Default(), Running: rec}
			if rec.Config != "" {
				cfg, err := appliance.LoadConfig(rec.Config)
				if err == nil {
					l.Config, l.File = cfg, rec.Config
				}
			}
			l.DataDir = rec.DataDir // what it really uses, whatever the file says now
			return l, nil
		}
	}
	if path == "" {
		for _, p := range []string{"ledge.yaml", "/etc/ledge/ledge.yaml"} {
			if _, err := os.Stat(p); err == nil {
				path = p
				break
			} else if !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("config %s: %w", p, err)
			}
		}
	}
	l := &loaded{Config: appliance.Default()}
	if path != "" {
		cfg, err := appliance.LoadConfig(path)
		if err != nil {
			return nil, err
		}
		l.Config, l.File, l.Env = cfg, path, env
	}
	if c.dataDir != "" {
		l.DataDir, l.Flag = c.dataDir, true
	}
	abs, err := filepath.Abs(l.DataDir)
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	l.DataDir = abs
	return l, nil
}
