package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// siteConfig writes a ledge.yaml with `dataDir: ledge-data` (relative) in
// a folder of its own and returns its path.
func siteConfig(t *testing.T) string {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "site", "ledge.yaml")
	os.MkdirAll(filepath.Dir(conf), 0o755)
	doc := "deviceId: disc-" + strconv.Itoa(os.Getpid()) + "-" + strconv.Itoa(int(time.Now().UnixNano()%1e6)) +
		"\ndataDir: ledge-data\nhttp:\n  listenTLS: 127.0.0.1:0\nhub:\n  listen:\n    mqtt: 127.0.0.1:0\n    mqtts: 127.0.0.1:0\n"
	if err := os.WriteFile(conf, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return conf
}

// The Quickstart's way: `ledge run --config deploy/examples/x.yaml`, then
// `ledge identity ...` with no flags, from anywhere. The data dir is beside
// the config file, and the CLI finds the daemon through its record.
func TestCLIFindsRunningLedgeWithoutFlags(t *testing.T) {
	conf := siteConfig(t)
	dataDir := filepath.Join(filepath.Dir(conf), "ledge-data")
	rt := []string{"LEDGE_RUNTIME_DIR=" + t.TempDir()}
	elsewhere := t.TempDir()
	d := launch(t, &runningLedge{addr: freePort(t), stderr: &syncBuffer{}, done: make(chan error, 1)},
		elsewhere, rt, "run", "--config", conf)
	if _, err := os.Stat(filepath.Join(dataDir, "ledge.sock")); err != nil {
		t.Fatalf("dataDir: ledge-data is not beside the config file: %v", err)
	}
	if _, err := os.Stat(filepath.Join(elsewhere, "ledge-data")); err == nil {
		t.Errorf("a data dir was made in the working directory")
	}

	out, errOut, code := ledgeIn(t, t.TempDir(), rt, "status", "--json")
	if code != 0 || !strings.Contains(out, `"system"`) {
		t.Fatalf("status without flags: exit %d\n%s\n%s", code, out, errOut)
	}
	tok, errOut, code := ledgeIn(t, t.TempDir(), rt, "admin", "token", "create", "grafana")
	if code != 0 || !strings.HasPrefix(tok, "ldg_") {
		t.Fatalf("token create without flags: exit %d %q %s", code, tok, errOut)
	}
	if !strings.Contains(errOut, dataDir) {
		t.Errorf("token create does not say which data dir it wrote to:\n%s", errOut)
	}
	// Named with --data-dir, that is where the message says it came from.
	_, errOut, code = ledgeIn(t, t.TempDir(), rt, "admin", "token", "create", "grafana2", "--data-dir", dataDir)
	if code != 0 || !strings.Contains(errOut, "data dir "+dataDir+" (from --data-dir)") {
		t.Errorf("token create --data-dir: exit %d, says %q", code, errOut)
	}

	// Stopped: its record goes with it, and the CLI says so.
	d.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-d.done; err != nil {
		t.Fatalf("ledge run: %v\n%s", err, d.stderr)
	}
	d.done <- nil
	_, errOut, code = ledgeIn(t, filepath.Dir(siteConfig(t)), rt, "status")
	if code != 3 || !strings.Contains(errOut, "no running ledge found") {
		t.Errorf("after the stop: exit %d: %s", code, errOut)
	}
}

// Two ledges on one machine: $LEDGE_CONFIG names one as --config does,
// ahead of the last one started (a shell that sets it keeps to its own
// ledge); without it the CLI takes the last one started.
func TestLedgeConfigNamesTheLedge(t *testing.T) {
	rt := []string{"LEDGE_RUNTIME_DIR=" + t.TempDir()}
	first, second := siteConfig(t), siteConfig(t)
	for _, conf := range []string{first, second} {
		launch(t, &runningLedge{addr: freePort(t), stderr: &syncBuffer{}, done: make(chan error, 1)}, "", rt, "run", "--config", conf)
	}
	deviceOf := func(env []string) string {
		t.Helper()
		out, errOut, code := ledgeIn(t, t.TempDir(), env, "status", "--json")
		if code != 0 {
			t.Fatalf("status: exit %d\n%s%s", code, out, errOut)
		}
		var st struct {
			System struct {
				DeviceID string `json:"deviceId"`
			} `json:"system"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil || st.System.DeviceID == "" {
			t.Fatalf("status --json: no system.deviceId (%v):\n%s", err, out)
		}
		return st.System.DeviceID
	}
	want := func(conf string) string {
		b, _ := os.ReadFile(conf)
		id, _, _ := strings.Cut(strings.TrimPrefix(string(b), "deviceId: "), "\n")
		return id
	}
	if got := deviceOf(append(rt, "LEDGE_CONFIG="+first)); got != want(first) {
		t.Errorf("LEDGE_CONFIG=%s: status of %s, want %s", first, got, want(first))
	}
	if got := deviceOf(rt); got != want(second) {
		t.Errorf("no LEDGE_CONFIG: status of %s, want the last started, %s", got, want(second))
	}
	// Named and not running: said so, naming where the data dir came from.
	stopped := siteConfig(t)
	_, errOut, code := ledgeIn(t, t.TempDir(), append(rt, "LEDGE_CONFIG="+stopped), "status")
	if code != 3 || !strings.Contains(errOut, "ledge is not running") || !strings.Contains(errOut, "$LEDGE_CONFIG="+stopped) {
		t.Errorf("LEDGE_CONFIG of a ledge not running: exit %d: %s", code, errOut)
	}
}

// A ledge killed with -9 leaves its record behind; the CLI drops it.
func TestCLIForgetsKilledLedge(t *testing.T) {
	conf := siteConfig(t)
	dir := t.TempDir()
	rt := []string{"LEDGE_RUNTIME_DIR=" + dir}
	d := launch(t, &runningLedge{addr: freePort(t), stderr: &syncBuffer{}, done: make(chan error, 1)},
		"", rt, "run", "--config", conf)
	if recs, _ := filepath.Glob(filepath.Join(dir, "*.json")); len(recs) != 1 {
		t.Fatalf("records %v, want one", recs)
	}
	d.cmd.Process.Kill()
	<-d.done
	d.done <- nil
	_, errOut, code := ledgeIn(t, filepath.Dir(siteConfig(t)), rt, "status")
	if code != 3 || !strings.Contains(errOut, "no running ledge found") {
		t.Errorf("exit %d: %s", code, errOut)
	}
	if recs, _ := filepath.Glob(filepath.Join(dir, "*.json")); len(recs) != 0 {
		t.Errorf("stale records kept: %v", recs)
	}

	// Named with --config, its socket is still there and refuses: every
	// command says that ledge is not running and how to start it, not
	// Go's dial error.
	for _, args := range [][]string{{"status"}, {"deploy", "status"}, {"identity", "list"}, {"hub"}, {"models", "list"}} {
		_, errOut, code := ledgeIn(t, "", rt, append(args, "--config", conf)...)
		want := 1
		if args[0] == "status" && len(args) == 1 {
			want = 3 // LSB's "not running"
		}
		if code != want || !strings.Contains(errOut, "ledge is not running") || !strings.Contains(errOut, "ledge run") ||
			strings.Contains(errOut, "dial unix") || strings.Contains(errOut, "http://ledge") {
			t.Errorf("ledge %v after kill -9: exit %d: %s", args, code, errOut)
		}
	}
}
