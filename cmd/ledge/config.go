package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"

	"ledge/appliance"
)

// configFlags are the flags every command that reads ledge.yaml shares.
type configFlags struct {
	path    string
	dataDir string
}

func (c *configFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.path, "config", "", "config file (default: $LEDGE_CONFIG, ./ledge.yaml or /etc/ledge/ledge.yaml, the first that exists)")
	fs.StringVar(&c.dataDir, "data-dir", "", "data directory (overrides dataDir in the config)")
}

// load finds and reads the config; with no file anywhere it returns the
// defaults. It says which file it used ("" for defaults).
func (c *configFlags) load() (appliance.Config, string, error) {
	path := c.path
	if path == "" {
		path = os.Getenv("LEDGE_CONFIG")
	}
	if path == "" {
		for _, p := range []string{"ledge.yaml", "/etc/ledge/ledge.yaml"} {
			if _, err := os.Stat(p); err == nil {
				path = p
				break
			} else if !errors.Is(err, fs.ErrNotExist) {
				return appliance.Config{}, "", fmt.Errorf("config %s: %w", p, err)
			}
		}
	}
	cfg := appliance.Default()
	if path != "" {
		var err error
		if cfg, err = appliance.LoadConfig(path); err != nil {
			return appliance.Config{}, "", err
		}
	}
	if c.dataDir != "" {
		cfg.DataDir = c.dataDir
	}
	return cfg, path, nil
}
