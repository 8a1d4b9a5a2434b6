package main

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"ledge/internal/testenv"
)

// The first start's admin password (issue 12 finding 9, issue 15 item 8):
// it never goes to the log; it is printed once on the terminal, and kept
// in <dataDir>/admin-password (0600) until the first login deletes it;
// it is made only once the listeners are bound.

var passwordLine = regexp.MustCompile(`(?m)^\s+([A-Za-z0-9-]{20})\s*$`)

// TestFirstStartPassword: `ledge run` on a fresh data dir, its output
// piped as under systemd: the log has no password but names the file;
// the file is 0600 and its password logs in, which deletes it.
func TestFirstStartPassword(t *testing.T) {
	dataDir := t.TempDir()
	d := startLedge(t, "--data-dir", dataDir)
	file := filepath.Join(dataDir, "admin-password")
	var pw string
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, err := os.ReadFile(file)
		if err == nil {
			pw = strings.TrimSpace(string(data))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s after the first start: %v\n%s", file, err, d.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st, _ := os.Stat(file); st.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", file, st.Mode().Perm())
	}
	// The log line that names the file has been written.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(d.stderr.String(), file); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the log does not say where the password is:\n%s", d.stderr.String())
		}
	}
	log := d.stderr.String()
	if len(pw) < 10 || strings.Contains(log, pw) {
		t.Fatalf("the admin password %q is in the log:\n%s", pw, log)
	}
	if !strings.Contains(log, file) {
		t.Errorf("the log does not say where the password is:\n%s", log)
	}
	resp, err := http.Post("http://"+d.addr+"/api/v1/auth/login", "application/json", strings.NewReader(`{"password": "`+pw+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("login with the file's password: %d", resp.StatusCode)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("%s is still there after the first login: %v", file, err)
	}
}

// TestFirstStartPasswordOnTerminal: started from a terminal (a pty made
// by util-linux's script), ledge prints the password there once; the log
// (stderr, piped) still has none.
func TestFirstStartPasswordOnTerminal(t *testing.T) {
	script := testenv.Command(t, "script", "bsdutils")
	dataDir := t.TempDir()
	addr := freePort(t)
	conf := filepath.Join(t.TempDir(), "ledge.yaml")
	os.WriteFile(conf, []byte("deviceId: tty-test\nhttp:\n  listenTLS: \"\"\nhub:\n  listen:\n    mqtt: 127.0.0.1:0\n    mqtts: 127.0.0.1:0\n"), 0o644)
	logFile := filepath.Join(t.TempDir(), "stderr")
	// script runs the command on a pty (its stdout is the terminal);
	// stderr goes to a file, as a log would.
	cmdline := ledgeBin + " run --config " + conf + " --data-dir " + dataDir + " --listen " + addr + " 2>" + logFile
	cmd := exec.Command(script, "-qfec", cmdline, "/dev/null")
	cmd.Env = append(os.Environ(), "LEDGE_ORT_LIB="+testenv.ORTLib(t))
	var tty syncBuffer
	cmd.Stdout = &tty
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Killing script closes the terminal: ledge gets SIGHUP and ends.
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(15 * time.Second)
	for !passwordLine.MatchString(tty.String()) {
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logFile)
			t.Fatalf("no password on the terminal:\n%s\nlog:\n%s", tty.String(), log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	pw := passwordLine.FindStringSubmatch(tty.String())[1]
	file, _ := os.ReadFile(filepath.Join(dataDir, "admin-password"))
	if strings.TrimSpace(string(file)) != pw {
		t.Errorf("terminal says %q, the file %q", pw, file)
	}
	log, _ := os.ReadFile(logFile)
	if strings.Contains(string(log), pw) {
		t.Errorf("the password is in the log:\n%s", log)
	}
	if !strings.Contains(tty.String(), "admin-password") {
		t.Errorf("the terminal does not say where the password is kept:\n%s", tty.String())
	}
}

// TestBusyPortMakesNoPassword: when the HTTP port is taken, `ledge run`
// fails without making (or telling) a password; the next start that
// binds makes it.
func TestBusyPortMakesNoPassword(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dataDir := t.TempDir()
	conf := filepath.Join(t.TempDir(), "ledge.yaml")
	os.WriteFile(conf, []byte("deviceId: busy-test\nhttp:\n  listenTLS: \"\"\nhub:\n  listen:\n    mqtt: 127.0.0.1:0\n    mqtts: 127.0.0.1:0\n"), 0o644)
	_, errOut, code := ledge(t, "run", "--config", conf, "--data-dir", dataDir, "--listen", l.Addr().String())
	if code == 0 || !strings.Contains(errOut, "listen") {
		t.Fatalf("ledge run on a busy port: exit %d\n%s", code, errOut)
	}
	if strings.Contains(errOut, "admin password") || passwordLine.MatchString(errOut) {
		t.Errorf("a start that failed told a password:\n%s", errOut)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "admin-password")); !os.IsNotExist(err) {
		t.Errorf("a start that failed left an admin-password file: %v", err)
	}
	d := startLedge(t, "--data-dir", dataDir)
	waitFile(t, filepath.Join(dataDir, "admin-password"), d)
}

func waitFile(t *testing.T, path string, d *runningLedge) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s:\n%s", path, d.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
