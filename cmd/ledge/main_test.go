package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"ledge/internal/testenv"
)

// ledgeBin is the binary under test, built once by TestMain.
var ledgeBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ledge-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ledgeBin = filepath.Join(dir, "ledge")
	// The daemons of the tests record themselves here, not in the
	// machine's runtime folder; a test of the discovery uses its own.
	os.Setenv("LEDGE_RUNTIME_DIR", filepath.Join(dir, "run"))
	out, err := exec.Command("go", "build", "-o", ledgeBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build ledge: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// ledge runs the binary and returns stdout, stderr and the exit code.
func ledge(t testing.TB, args ...string) (string, string, int) {
	t.Helper()
	return ledgeIn(t, "", nil, args...)
}

// ledgeIn runs the binary in dir (the test's folder when "") with env
// added to the environment.
func ledgeIn(t testing.TB, dir string, env []string, args ...string) (string, string, int) {
	t.Helper()
	return ledgeStdin(t, dir, "", env, args...)
}

// ledgeStdin is ledgeIn with stdin as the command's input.
func ledgeStdin(t testing.TB, dir, stdin string, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(ledgeBin, args...)
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = append(append(os.Environ(), "LEDGE_ORT_LIB="+testenv.ORTLib(t)), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stderr.String(), "goroutine ") || strings.Contains(stderr.String(), "panic:") {
		t.Fatalf("ledge %v panicked:\n%s", args, stderr.String())
	}
	return stdout.String(), stderr.String(), code
}

// freePort returns a loopback address nobody listens on.
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// dataDir is the --data-dir the process was started with.
func (d *runningLedge) dataDir(t testing.TB) string {
	for i, a := range d.cmd.Args {
		if a == "--data-dir" && i+1 < len(d.cmd.Args) {
			return d.cmd.Args[i+1]
		}
	}
	t.Fatal("ledge run without --data-dir")
	return ""
}

// runningLedge is a `ledge run` process.
type runningLedge struct {
	bin    string // the binary; ledgeBin when ""
	cmd    *exec.Cmd
	addr   string
	stderr *syncBuffer
	done   chan error
}

// syncBuffer is a bytes.Buffer that a process's output can be copied into
// while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func startLedge(t testing.TB, args ...string) *runningLedge {
	t.Helper()
	d := &runningLedge{addr: freePort(t), stderr: &syncBuffer{}, done: make(chan error, 1)}
	// The hub's MQTT listeners on free ports, so tests run side by side.
	conf := filepath.Join(t.TempDir(), "ledge.yaml")
	if err := os.WriteFile(conf, []byte("deviceId: test-"+strconv.Itoa(os.Getpid())+"-"+strconv.Itoa(int(time.Now().UnixNano()%1e6))+"\nhttp:\n  listenTLS: 127.0.0.1:0\nhub:\n  listen:\n    mqtt: 127.0.0.1:0\n    mqtts: 127.0.0.1:0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return launch(t, d, "", nil, append([]string{"run", "--config", conf, "--data-dir", t.TempDir()}, args...)...)
}

// launch starts `ledge args... --listen d.addr` in dir with env added, and
// waits until it answers.
func launch(t testing.TB, d *runningLedge, dir string, env []string, args ...string) *runningLedge {
	t.Helper()
	if err := start(t, d, dir, env, args...); err != nil {
		t.Fatal(err)
	}
	return d
}

// start is launch for a goroutine of the test: it returns what went
// wrong. A --listen port another process took between freePort and the
// start (tests of other packages run beside) is replaced by a new one.
func start(t testing.TB, d *runningLedge, dir string, env []string, args ...string) error {
	for attempt := 1; ; attempt++ {
		err := startOnce(t, d, dir, env, args...)
		if err == nil || attempt == 3 || !strings.Contains(d.stderr.String(), "address already in use") {
			return err
		}
		d.addr, d.stderr, d.done = freePort(t), &syncBuffer{}, make(chan error, 1)
	}
}

func startOnce(t testing.TB, d *runningLedge, dir string, env []string, args ...string) error {
	bin := d.bin
	if bin == "" {
		bin = ledgeBin
	}
	d.cmd = exec.Command(bin, append(args, "--listen", d.addr)...)
	d.cmd.Dir = dir
	d.cmd.Env = append(append(os.Environ(), "LEDGE_ORT_LIB="+testenv.ORTLib(t)), env...)
	d.cmd.Stderr = d.stderr
	if err := d.cmd.Start(); err != nil {
		return err
	}
	cmd, done := d.cmd, d.done
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		err := <-done
		done <- err // a retry's cleanup may run after the exit was taken
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		// Its own log says it listens on the address: /healthz alone may
		// be answered by another process that took the port freePort
		// gave (another test's ledge), while this one exits, unable to
		// listen.
		resp, err := http.Get("http://" + d.addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if out := d.stderr.String(); strings.Contains(out, `msg="http listening"`) && strings.Contains(out, "addr="+d.addr+" ") {
				return nil
			}
		}
		select {
		case err := <-done:
			done <- err // for the cleanup, which waits for it (it hung make test)
			return fmt.Errorf("ledge run exited: %v\n%s", err, d.stderr)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ledge run not answering after 15 s:\n%s", d.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestVersion(t *testing.T) {
	out, errOut, code := ledge(t, "version")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"ledge ", "go1.", "onnxruntime 1.24"} {
		if !strings.Contains(out, want) {
			t.Errorf("version output lacks %q:\n%s", want, out)
		}
	}
}

func TestUsage(t *testing.T) {
	_, errOut, code := ledge(t)
	if code != 2 || !strings.Contains(errOut, "detect") || !strings.Contains(errOut, "run") {
		t.Errorf("no args: exit %d, %s", code, errOut)
	}
	_, errOut, code = ledge(t, "frobnicate")
	if code != 2 || !strings.Contains(errOut, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: exit %d, %s", code, errOut)
	}
}

func TestRunStopsOnSignal(t *testing.T) {
	d := startLedge(t)
	for path, want := range map[string]int{"/healthz": 200, "/metrics": 401, "/api/v1/system": 401, "/login": 200} {
		resp, err := http.Get("http://" + d.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	anon, file := rss(t, d.cmd.Process.Pid)
	t.Logf("ledge run, no model: RssAnon %.1f MiB, RssFile %.1f MiB", anon, file)

	start := time.Now()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, d.stderr)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("still running 5 s after SIGTERM:\n%s", d.stderr)
	}
	t.Logf("stopped in %s", time.Since(start).Round(time.Millisecond))
	d.done <- nil // for the cleanup
	if !strings.Contains(d.stderr.String(), "stopped") {
		t.Errorf("log lacks the stop line:\n%s", d.stderr)
	}
}

func TestRunBadConfig(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "ledge.yaml")
	os.WriteFile(cfg, []byte("http:\n  listen: 127.0.0.1:0\nhttp_port: 80\n"), 0o644)
	_, errOut, code := ledge(t, "run", "--config", cfg, "--data-dir", t.TempDir())
	if code != 1 || !strings.Contains(errOut, "line 3") || !strings.Contains(errOut, `unknown key "http_port"`) || !strings.Contains(errOut, cfg) {
		t.Errorf("exit %d, stderr %q: want the file, line 3 and the unknown key", code, errOut)
	}
}

// rss reads the anonymous and file-backed resident memory of pid in MiB.
func rss(t testing.TB, pid int) (anon, file float64) {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "RssAnon:":
			anon = kb / 1024
		case "RssFile:":
			file = kb / 1024
		}
	}
	return anon, file
}

// BenchmarkRunMemory starts `ledge run` with no model and reports its
// resident memory once it serves (goal: RssAnon under 40 MB).
func BenchmarkRunMemory(b *testing.B) {
	for b.Loop() {
		d := startLedge(b)
		time.Sleep(500 * time.Millisecond)
		anon, file := rss(b, d.cmd.Process.Pid)
		b.ReportMetric(anon, "RssAnon-MiB")
		b.ReportMetric(file, "RssFile-MiB")
		d.cmd.Process.Signal(syscall.SIGTERM)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		select {
		case <-d.done:
		case <-ctx.Done():
		}
		cancel()
		d.done <- nil
	}
}

func TestStatusTalksToDaemon(t *testing.T) {
	dataDir := t.TempDir()
	startLedge(t, "--data-dir", dataDir)
	out, errOut, code := ledge(t, "status", "--data-dir", dataDir, "--json")
	if code != 0 || !strings.Contains(out, `"version"`) {
		t.Fatalf("exit %d: %s %s", code, out, errOut)
	}
	if out, errOut, code := ledge(t, "status", "--data-dir", dataDir, "--check"); code != 0 || out != "OK: nothing fails\n" {
		t.Errorf("status --check of a healthy ledge: exit %d %q %s", code, out, errOut)
	}
	// Azure's 417 in words, the code in brackets.
	out, errOut, code = ledge(t, "deploy", "status", "--data-dir", dataDir)
	if code != 0 || !strings.Contains(out, "no deployment set yet (417") || strings.Contains(out, "status 417") {
		t.Errorf("deploy status before any deployment: exit %d\n%s%s", code, out, errOut)
	}
	if strings.Contains(out, "MODULE") { // a table of nothing
		t.Errorf("deploy status before any deployment prints an empty module table:\n%s", out)
	}
	_, errOut, code = ledge(t, "status", "--data-dir", t.TempDir())
	if code != 3 || !strings.Contains(errOut, "ledge is not running") {
		t.Errorf("no daemon: exit %d, want 3: %s", code, errOut)
	}
}

func TestAdminPasswordAndTokens(t *testing.T) {
	dataDir := t.TempDir()
	cmd := exec.Command(ledgeBin, "admin", "set-password", "--data-dir", dataDir)
	cmd.Stdin = strings.NewReader("a long enough password\n")
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "admin password set") {
		t.Fatalf("set-password: %v %s", err, out)
	}
	cmd = exec.Command(ledgeBin, "admin", "set-password", "--data-dir", dataDir)
	cmd.Stdin = strings.NewReader("short\n")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "too short") {
		t.Fatalf("short password: %v %s", err, out)
	}
	tok, errOut, code := ledge(t, "admin", "token", "create", "grafana", "--data-dir", dataDir)
	tok = strings.TrimSpace(tok)
	if code != 0 || !strings.HasPrefix(tok, "ldg_") {
		t.Fatalf("token create: %d %q %s", code, tok, errOut)
	}
	d := startLedge(t, "--data-dir", dataDir)
	req, _ := http.NewRequest("GET", "http://"+d.addr+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("metrics with the CLI-made token: %d", resp.StatusCode)
	}
	out, _, _ := ledge(t, "admin", "token", "list", "--data-dir", dataDir, "--json")
	if !strings.Contains(out, `"grafana"`) || strings.Contains(out, tok) {
		t.Errorf("token list --json: %s", out)
	}
	out, _, _ = ledge(t, "admin", "token", "list", "--data-dir", dataDir)
	if !strings.HasPrefix(out, "NAME") || !strings.Contains(out, "\ngrafana ") || strings.Contains(out, tok) {
		t.Errorf("token list:\n%s", out)
	}
	if _, errOut, code := ledge(t, "admin", "token", "revoke", "nope", "--data-dir", dataDir); code != 1 || !strings.Contains(errOut, "no token") {
		t.Errorf("revoke unknown: %d %s", code, errOut)
	}
}

// TestCLIManners: -h exits 0 with the usage once; mistyped commands,
// subcommands and flags get a suggestion and exit 2.
func TestCLIManners(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}, {"hub", "-h"}, {"run", "-h"}, {"deploy", "-h"}, {"deploy", "status", "-h"}, {"status", "--help"}} {
		out, errOut, code := ledge(t, args...)
		if code != 0 {
			t.Errorf("%v: exit %d", args, code)
		}
		if n := strings.Count(out+errOut, "Usage: ledge"); n != 1 {
			t.Errorf("%v: the usage %d times:\n%s%s", args, n, out, errOut)
		}
	}
	// `ledge run` never takes another running ledge's config: its help
	// does not say it does.
	if out, errOut, _ := ledge(t, "run", "-h"); strings.Contains(out+errOut, "running ledge") {
		t.Errorf("run -h says it follows the running ledge:\n%s%s", out, errOut)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"stauts"}, `unknown command "stauts" (did you mean status?)`},
		{[]string{"identiy", "list"}, "(did you mean identity?)"},
		{[]string{"deploy", "aply", "x.yaml"}, `unknown subcommand "aply" (did you mean apply?)`},
		{[]string{"models", "ls"}, `unknown subcommand "ls" (did you mean list?)`},
		{[]string{"pipelines", "remove", "x"}, `(did you mean rm?)`},
		{[]string{"status", "--jsno"}, "flag provided but not defined: -jsno (did you mean --json?)"},
		{[]string{"detect", "--modle", "m.onnx", "x.jpg"}, "(did you mean --model?)"},
		{[]string{"run", "--data-dri", "/tmp/x"}, "(did you mean --data-dir?)"},
		{[]string{"fleet", "deploy", "x", "x.yaml", "--abort", "5%"}, "(did you mean --abort-after?)"},
		{[]string{"fleet", "list"}, "(did you mean status?)"},
	} {
		_, errOut, code := ledge(t, tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stderr %q: want exit 2 and %q", tc.args, code, errOut, tc.want)
		}
		if strings.Contains(errOut, "Usage: ledge") {
			t.Errorf("%v: a typo prints the whole usage:\n%s", tc.args, errOut)
		}
	}
}

// A taken port names the ledge.yaml key (and flag) that moves it.
func TestRunPortInUseNamesKey(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	conf := filepath.Join(t.TempDir(), "ledge.yaml")
	os.WriteFile(conf, []byte("http:\n  listenTLS: \"\"\nhub:\n  listen:\n    mqtt: 127.0.0.1:0\n    mqtts: 127.0.0.1:0\n"), 0o644)
	_, errOut, code := ledge(t, "run", "--config", conf, "--data-dir", t.TempDir(), "--listen", l.Addr().String())
	if code != 1 || !strings.Contains(errOut, "http.listen: "+l.Addr().String()+" is in use") || !strings.Contains(errOut, "--listen") {
		t.Errorf("exit %d: %s", code, errOut)
	}
}

// TestStatusUpstreamWithoutHub: a fleet device runs with the hub off and
// links to its broker alone; when the broker refuses, ledge status says
// so, since when and why (it said only "hub not running"), and so does
// GET /api/v1/upstream.
func TestStatusUpstreamWithoutHub(t *testing.T) {
	closed := freePort(t) // nothing listens there: connection refused
	dir, dataDir := t.TempDir(), t.TempDir()
	conf := filepath.Join(dir, "ledge.yaml")
	os.WriteFile(conf, []byte(`deviceId: nohub-`+strconv.Itoa(os.Getpid())+`
http: {listenTLS: ""}
hub:
  enabled: false
  upstream: {mode: mqtt, url: "tcp://`+closed+`", keepAlive: 5s}
`), 0o644)
	launch(t, &runningLedge{addr: freePort(t), stderr: &syncBuffer{}, done: make(chan error, 1)}, "", nil, "run", "--dev", "--config", conf, "--data-dir", dataDir)
	var out string
	deadline := time.Now().Add(30 * time.Second)
	for {
		var code int
		out, _, code = ledge(t, "status", "--data-dir", dataDir)
		if strings.Contains(out, "connection refused") || time.Now().After(deadline) {
			if code != 0 { // an upstream outage is not a failing appliance (systemd would restart it)
				t.Errorf("ledge status exits %d with the broker down", code)
			}
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !regexp.MustCompile(`(?m)^ +upstream mqtt tcp://` + regexp.QuoteMeta(closed) + `: connecting since .+ - .*connection refused`).MatchString(out) {
		t.Errorf("ledge status with the hub off and the broker down:\n%s", out)
	}
	js, _, _ := ledge(t, "status", "--data-dir", dataDir, "--json")
	var rep struct {
		Upstream struct{ Mode, State, LastError string }
	}
	if err := json.Unmarshal([]byte(js), &rep); err != nil || rep.Upstream.Mode != "mqtt" || rep.Upstream.State != "connecting" || !strings.Contains(rep.Upstream.LastError, "connection refused") {
		t.Errorf("ledge status --json upstream: %+v %v", rep.Upstream, err)
	}
}

// TestSeveralLedgesNoteOnlyWhereItMatters: with two ledges running, a
// command that talks to one says which it took; version and detect, which
// only read the ONNX Runtime setting, do not.
func TestSeveralLedgesNoteOnlyWhereItMatters(t *testing.T) {
	env := []string{"LEDGE_RUNTIME_DIR=" + t.TempDir()}
	for range 2 {
		conf := filepath.Join(t.TempDir(), "ledge.yaml")
		os.WriteFile(conf, []byte("http: {listenTLS: \"\"}\nhub: {enabled: false}\n"), 0o644)
		launch(t, &runningLedge{addr: freePort(t), stderr: &syncBuffer{}, done: make(chan error, 1)}, "", env, "run", "--dev", "--config", conf, "--data-dir", t.TempDir())
	}
	dir := t.TempDir() // no ledge.yaml here
	// Said once per command (status said it twice: once finding the
	// config, once connecting).
	for _, args := range [][]string{{"status"}, {"deploy", "status"}, {"identity", "list"}} {
		_, errOut, _ := ledgeIn(t, dir, env, args...)
		if n := strings.Count(errOut, "2 ledges run; using the one started last"); n != 1 {
			t.Errorf("ledge %s with two ledges running says which it took %d times, want once: %q", strings.Join(args, " "), n, errOut)
		}
	}
	for _, args := range [][]string{{"version"}, {"detect", "--model", testenv.Model(t, "fastestdet.onnx"), testenv.Media(t, "bus.jpg")}} {
		out, errOut, code := ledgeIn(t, dir, env, args...)
		if code != 0 || strings.Contains(errOut, "ledges run") {
			t.Errorf("ledge %s: exit %d, stderr %q\n%s", args[0], code, errOut, out)
		}
	}
}
