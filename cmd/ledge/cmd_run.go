package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/term"

	"ledge/appliance"
)

func init() {
	register("run", command{summary: "run the appliance (daemon)", run: runCmd})
}

func runCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("run", "[flags]", stderr)
	var cf configFlags
	cf.registerForRun(fs)
	dev := fs.Bool("dev", false, "development mode: clients on loopback need no credentials")
	listen := fs.String("listen", "", "HTTP address (overrides http.listen)")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	l, err := cf.loadForRun()
	if err != nil {
		return err
	}
	cfg, path := l.Config, l.File
	if *dev {
		cfg.Dev = true
	}
	if *listen != "" {
		cfg.HTTP.Listen = *listen
	}
	// FFmpeg and OpenCV write to file descriptor 2 themselves (an RTSP
	// camera that refuses prints a line per attempt): their lines go into
	// the log at DEBUG instead of the terminal.
	stderrFile, startNative, stopNative, err := nativeStderr()
	if err != nil {
		stderrFile, startNative, stopNative = os.Stderr, func(*slog.Logger) {}, func() {}
	}
	defer stopNative()
	log := cfg.Log.NewLogger(stderrFile)
	startNative(log.With())
	if path != "" {
		log.Info("config loaded", "file", path)
	} else {
		log.Info("no config file: using defaults (see docs/configuration.md)")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	app, err := appliance.New(ctx, cfg, appliance.BuildInfo{Version: version, Commit: commit}, log)
	if err != nil {
		return err
	}
	defer app.Close()
	showFirstPassword(app.FirstAdminPassword(), appliance.PasswordFile(cfg.DataDir))
	conf := ""
	if path != "" {
		conf, _ = filepath.Abs(path)
	}
	if forget, err := writeRunRecord(runRecord{PID: os.Getpid(), Config: conf, DataDir: cfg.DataDir,
		Socket: filepath.Join(cfg.DataDir, "ledge.sock"), HTTP: cfg.HTTP.Listen, Started: time.Now()}); err != nil {
		log.Warn("the CLI will need --config or --data-dir to find this ledge", "err", err)
	} else {
		defer forget()
	}
	go func() {
		<-ctx.Done()
		stop() // a second signal kills the process the default way
	}()
	if err := app.Run(ctx); err != nil {
		return fmt.Errorf("%w", err)
	}
	return nil
}

// showFirstPassword prints the admin password made by this (first) start
// on the terminal, once; it never goes to the log (under systemd, stdout
// is the journal, and it is not printed there: the file says it).
func showFirstPassword(pw, file string) {
	if pw == "" || !term.IsTerminal(int(os.Stdout.Fd())) {
		return
	}
	fmt.Fprintf(os.Stdout, "\nThe dashboard's admin password (shown once; also in %s until the first login):\n\n    %s\n\n", file, pw)
}
