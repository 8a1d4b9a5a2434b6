package main

import (
	"encoding/json"
	"io"
	"time"
)

func init() {
	register("status", command{summary: "show what the running ledge is doing", run: statusCmd})
}

func statusCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("status", "[flags]", stderr)
	var cf configFlags
	cf.register(fs)
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	d, err := connectDaemon(&cf)
	if err != nil {
		return err
	}
	ctx, cancel := withTimeout(10 * time.Second)
	defer cancel()
	var sys map[string]any
	if err := d.do(ctx, "GET", "/system", nil, &sys); err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(sys)
}
