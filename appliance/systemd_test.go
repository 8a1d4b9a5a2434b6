package appliance

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// notifySocket listens where systemd would and returns its datagrams.
func notifySocket(t *testing.T) (string, <-chan string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	msgs := make(chan string, 1000)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	return path, msgs
}

// await reads datagrams until one contains want; it fails after 10 s.
func await(t *testing.T, msgs <-chan string, want string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatalf("notify socket closed while waiting for %q", want)
			}
			if strings.Contains(m, want) {
				return
			}
		case <-timeout:
			t.Fatalf("no %q from ledge within 10 s", want)
		}
	}
}

// The notifier writes what systemd's own systemd-notify writes.
func TestSDNotifyMatchesSystemdNotify(t *testing.T) {
	bin, err := exec.LookPath("systemd-notify")
	if err != nil {
		t.Fatal("systemd-notify not found: apt-get install systemd")
	}
	path, msgs := notifySocket(t)
	cmd := exec.Command(bin, "--no-block", "--ready", "--status=running")
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+path)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("systemd-notify: %v: %s", err, out)
	}
	theirs := <-msgs
	if err := (&sdNotifier{socket: path}).notify("READY=1", "STATUS=running"); err != nil {
		t.Fatal(err)
	}
	if ours := <-msgs; ours != theirs {
		t.Errorf("ledge sent %q, systemd-notify %q", ours, theirs)
	}
}

// ledge run feeds systemd's watchdog while its components are healthy,
// stops when one fails or hangs, goes on when only a part outside ledge
// (the Docker engine) is down, and says why in STATUS.
func TestSystemdWatchdog(t *testing.T) {
	path, msgs := notifySocket(t)
	t.Setenv("NOTIFY_SOCKET", path)
	t.Setenv("WATCHDOG_USEC", "300000") // fed every 100 ms
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	cfg := testConfig(t)
	cfg.Agent.DockerHost = "unix://" + filepath.Join(t.TempDir(), "no-docker.sock") // a real outside part, down
	app, err := New(t.Context(), cfg, BuildInfo{Version: "test"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	// The one fault the real components cannot produce on demand: an
	// internal failure, or a check that hangs.
	var fail atomic.Pointer[error]
	hang := make(chan struct{})
	var hanging atomic.Bool
	app.health.add("injected", func(ctx context.Context) error {
		if hanging.Load() {
			select {
			case <-hang:
			case <-ctx.Done():
			}
		}
		if p := fail.Load(); p != nil {
			return *p
		}
		return nil
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()

	await(t, msgs, "READY=1")
	// Docker is down, yet the watchdog is fed.
	if _, ok := app.health.check(t.Context()); ok {
		t.Fatal("the agent reports healthy with no Docker engine")
	}
	for range 3 {
		await(t, msgs, "WATCHDOG=1")
	}

	boom := errors.New("store cannot commit")
	fail.Store(&boom)
	await(t, msgs, "STATUS=unhealthy: injected: store cannot commit")
	notFedFor(t, msgs, 500*time.Millisecond)

	fail.Store(nil)
	await(t, msgs, "STATUS=running")
	await(t, msgs, "WATCHDOG=1")

	hanging.Store(true)
	await(t, msgs, "STATUS=unhealthy: health checks did not answer")
	notFedFor(t, msgs, 500*time.Millisecond)
	hanging.Store(false)
	close(hang)
	await(t, msgs, "WATCHDOG=1")

	cancel()
	await(t, msgs, "STOPPING=1")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// notFedFor fails if a WATCHDOG=1 arrives within d (five feed periods).
func notFedFor(t *testing.T, msgs <-chan string, d time.Duration) {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case m := <-msgs:
			if strings.Contains(m, "WATCHDOG=1") {
				t.Fatalf("watchdog fed while a component fails: %q", m)
			}
		case <-timeout:
			return
		}
	}
}

// Without NOTIFY_SOCKET (not under systemd) there is no systemd component.
func TestNoSystemdComponentOutsideSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	app, err := New(t.Context(), testConfig(t), BuildInfo{Version: "test"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	for _, c := range app.components {
		if c.name == "systemd" {
			t.Fatal("systemd component added outside systemd")
		}
	}
}
