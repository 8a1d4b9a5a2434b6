package appliance

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"ledge/internal/fault"
)

// sdNotifier speaks systemd's notify protocol (sd_notify(3)): newline
// separated VAR=value lines in one datagram to the unix socket named by
// $NOTIFY_SOCKET ("@name" is an abstract socket).
type sdNotifier struct{ socket string }

// notify sends the lines as one datagram.
func (n *sdNotifier) notify(lines ...string) error {
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.socket, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(strings.Join(lines, "\n"))); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// systemdFromEnv returns the notifier and the watchdog period systemd asks
// for ($WATCHDOG_USEC, when $WATCHDOG_PID is unset or this process), or nil
// when ledge does not run under a Type=notify unit.
func systemdFromEnv() (*sdNotifier, time.Duration) {
	socket := os.Getenv("NOTIFY_SOCKET")
	if socket == "" {
		return nil, 0
	}
	var period time.Duration
	if us, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64); err == nil && us > 0 {
		if pid := os.Getenv("WATCHDOG_PID"); pid == "" || pid == strconv.Itoa(os.Getpid()) {
			period = time.Duration(us) * time.Microsecond
		}
	}
	return &sdNotifier{socket: socket}, period
}

// systemdWatchdog tells systemd that ledge is ready and feeds its watchdog
// (WATCHDOG=1 every period/3) while every component is healthy. A check
// that fails, or does not answer within period/3, stops the feeding:
// systemd then restarts ledge once WatchdogSec has passed without a feed.
// A part outside ledge that is down (an error of kind fault.Unavailable,
// such as an unreachable Docker engine) does not: a restart cannot bring it
// back, and would stop the hub and pipelines that still work.
type systemdWatchdog struct {
	n      *sdNotifier
	period time.Duration // systemd's WatchdogSec; 0: no watchdog
	health *healthSet
	log    *slog.Logger
}

// Run is the component's lifecycle: READY=1 now, STOPPING=1 when ctx ends.
func (w *systemdWatchdog) Run(ctx context.Context) error {
	if err := w.n.notify("READY=1", "STATUS=running"); err != nil {
		w.log.Warn("cannot tell systemd that ledge is ready", "err", err)
	}
	defer w.n.notify("STOPPING=1", "STATUS=stopping")
	if w.period <= 0 {
		w.log.Info("systemd notified: ready (no watchdog)")
		<-ctx.Done()
		return nil
	}
	every := w.period / 3
	w.log.Info("systemd notified: ready; feeding its watchdog while components are healthy", "watchdogSec", w.period, "every", every)
	results := make(chan []componentCheck, 1)
	running := false // a check is under way (it may hang)
	fed := true
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		if !running {
			running = true
			go func() { results <- w.health.run(ctx) }()
		}
		var failing []string
		select {
		case <-ctx.Done():
			return nil
		case checks := <-results:
			running = false
			for _, c := range checks {
				if c.err != nil && !fault.Is(c.err, fault.Unavailable) {
					failing = append(failing, fmt.Sprintf("%s: %v", c.name, c.err))
				}
			}
		case <-tick.C:
			failing = []string{fmt.Sprintf("health checks did not answer within %s", every)}
		}
		if len(failing) == 0 {
			if !fed {
				w.log.Info("components healthy again: feeding systemd's watchdog")
				w.n.notify("STATUS=running")
			}
			fed = true
			if err := w.n.notify("WATCHDOG=1"); err != nil {
				w.log.Warn("cannot feed systemd's watchdog", "err", err)
			}
		} else if fed {
			fed = false
			reason := strings.Join(failing, "; ")
			w.log.Error("not feeding systemd's watchdog: systemd restarts ledge if this lasts", "watchdogSec", w.period, "failing", reason)
			w.n.notify("STATUS=unhealthy: " + reason)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
