package ledge_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"ledge/internal/testenv"
)

// TestQuickstart follows README.md's Quickstart as a new user would: in a
// fresh copy of the checkout (its tracked files, as a clone has them, with
// ../shared beside it) and a fresh data dir, it runs every command block
// of the Quickstart in order, as written, and checks what each step says
// the user will see.
//
// What it changes so that it can run beside other tests, and nothing else:
// the listeners are on free ports (step 1 through $LEDGE_CONFIG, step 2 by
// editing the copy's example config, mosquitto_pub through its config
// file), the containers and network get names of their own, /tmp/ in a
// command is a folder of the test's, and the CLI's record of running
// ledges is kept in a folder of the test's ($LEDGE_RUNTIME_DIR).
//
// Step 1's `make run` and step 4's `bin/ledge identity add sensor-1` are
// inline in the text; the test runs them too, after checking that the
// README still says them.
func TestQuickstart(t *testing.T) {
	testenv.Docker(t)
	testenv.Command(t, "make", "make")
	testenv.Command(t, "git", "git")
	testenv.Command(t, "mosquitto_pub", "mosquitto-clients")
	qs := newQuickstart(t)
	steps := qs.steps()
	if len(steps) < 5 {
		t.Fatalf("README.md's Quickstart has %d steps, want at least 5", len(steps))
	}

	// 1. Run it: the dashboard answers and the admin password, however
	// it is shown, logs in. Ctrl-C stops it within 5 s.
	step1 := steps[0]
	if !strings.Contains(step1.text, "`make run`") {
		t.Fatalf("step 1 no longer says `make run`:\n%s", step1.text)
	}
	first := qs.daemon(t, "make run", qs.step1Port, []string{"LEDGE_CONFIG=" + qs.step1Config})
	qs.checkLogin(t, first, qs.step1Port, qs.step1Data)
	first.interrupt(t, 5*time.Second)

	// 2. Watch a pipeline: the test pattern runs (frames on its stream),
	// with its data beside the example config.
	var second *process
	for _, c := range steps[1].commands {
		if strings.HasPrefix(c, "make run") {
			qs.adaptExampleConfig(t, c)
			second = qs.daemon(t, c, qs.step2Port, nil)
		} else {
			qs.run(t, c)
		}
	}
	if second == nil {
		t.Fatalf("step 2 has no `make run` block:\n%s", steps[1].text)
	}
	qs.checkPattern(t)

	// 3. Detect on a picture: one JSON line per object, the boxes drawn.
	for _, c := range steps[2].commands {
		out := qs.run(t, c)
		if strings.Contains(c, "detect") {
			for _, want := range []string{`"label":"bus"`, `"label":"person"`} {
				if !strings.Contains(out, want) {
					t.Errorf("step 3: detect output lacks %s:\n%s", want, out)
				}
			}
		}
	}
	drawn, err := os.ReadFile(filepath.Join(qs.tmp, "bus.jpg"))
	if err != nil || len(drawn) < 1000 || !bytes.HasPrefix(drawn, []byte{0xff, 0xd8}) {
		t.Errorf("step 3: no drawn JPEG at /tmp/bus.jpg (%d bytes, %v)", len(drawn), err)
	}

	// 4. Connect a device: a connection string for sensor-1; the MQTT user
	// publishes, and a subscriber (as the same user) gets the message.
	if !strings.Contains(steps[3].text, "`bin/ledge identity add sensor-1`") {
		t.Fatalf("step 4 no longer says `bin/ledge identity add sensor-1`:\n%s", steps[3].text)
	}
	cs := qs.run(t, "bin/ledge identity add sensor-1")
	for _, want := range []string{"HostName=", "DeviceId=sensor-1", "SharedAccessKey="} {
		if !strings.Contains(cs, want) {
			t.Errorf("step 4: the connection string lacks %s:\n%s", want, cs)
		}
	}
	var sub *process
	for _, c := range steps[3].commands {
		if strings.HasPrefix(c, "mosquitto_pub") {
			sub = qs.subscriber(t, c)
		}
		qs.run(t, c)
	}
	if sub == nil {
		t.Fatalf("step 4 has no mosquitto_pub:\n%s", steps[3].text)
	}
	if err := sub.wait(20 * time.Second); err != nil || !strings.Contains(sub.out.String(), "21.5") {
		t.Errorf("step 4: the subscriber got %q (%v), want 21.5", sub.out.String(), err)
	}

	// 5. Deploy container modules: a plan, convergence, both running, and
	// the receiver gets the sender's messages through the route.
	outs := map[string]string{}
	for _, c := range steps[4].commands {
		outs[c] = qs.run(t, c)
	}
	for prefix, wants := range map[string][]string{
		"bin/ledge deploy check":  {"create  module  receiver", "create  module  sender", "people"},
		"bin/ledge deploy apply":  {"converged"},
		"bin/ledge deploy status": {"receiver", "sender", "running", "converged"},
	} {
		found := false
		for c, out := range outs {
			if strings.HasPrefix(c, prefix) {
				found = true
				for _, w := range wants {
					if !strings.Contains(out, w) {
						t.Errorf("step 5: %s lacks %q:\n%s", c, w, out)
					}
				}
			}
		}
		if !found {
			t.Errorf("step 5 has no %q", prefix)
		}
	}
	qs.checkReceiverGets(t)

	// And `bin/ledge status` says what runs.
	status := qs.run(t, "bin/ledge status")
	for _, re := range []string{`(?m)^  pattern +running`, `(?m)^  receiver +running`, `(?m)^health +ok`} {
		if !regexp.MustCompile(re).MatchString(status) {
			t.Errorf("bin/ledge status lacks %s:\n%s", re, status)
		}
	}

	// The way step 5 gives to remove the modules again.
	const none = "bin/ledge deploy apply --wait deploy/examples/deployment-none.yaml"
	if !strings.Contains(strings.Join(strings.Fields(steps[4].text), " "), none) {
		t.Errorf("step 5 no longer says how to remove the modules (%s):\n%s", none, steps[4].text)
	}
	if out := qs.run(t, none); !strings.Contains(out, "converged") {
		t.Errorf("%s:\n%s", none, out)
	}
	if out := qs.run(t, "bin/ledge deploy status"); strings.Contains(out, "receiver") || strings.Contains(out, "sender") {
		t.Errorf("the modules are still there after %s:\n%s", none, out)
	}
	second.interrupt(t, 5*time.Second)
}

// quickstart is the test's copy of the checkout and its environment.
type quickstart struct {
	repo, dir, tmp string
	env            []string
	id             string // names the containers, network and device

	step1Config, step1Data string
	step1Port, step2Port   string
	mqttPort               string
}

type qsStep struct {
	text     string
	commands []string // the lines of its ```sh blocks
}

func newQuickstart(t *testing.T) *quickstart {
	t.Helper()
	b := make([]byte, 3)
	rand.Read(b)
	ws := t.TempDir()
	qs := &quickstart{repo: testenv.RepoRoot(t), dir: filepath.Join(ws, "ledge"), tmp: filepath.Join(ws, "tmp"), id: "qs" + hex.EncodeToString(b)}
	os.MkdirAll(qs.tmp, 0o755)
	copyTracked(t, qs.repo, qs.dir)
	if err := os.Symlink(testenv.SharedDir(t), filepath.Join(ws, "shared")); err != nil {
		t.Fatal(err)
	}

	// Step 1: the defaults, on free ports and a fresh data dir.
	qs.step1Port, qs.step2Port, qs.mqttPort = freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1"), freePort(t, "")
	qs.step1Data = filepath.Join(ws, "step1-data")
	qs.step1Config = filepath.Join(ws, "step1.yaml")
	os.WriteFile(qs.step1Config, []byte(fmt.Sprintf(`deviceId: %s-1
dataDir: %s
http:
  listen: "127.0.0.1:%s"
  listenTLS: "127.0.0.1:%s"
hub:
  listen: {mqtt: "127.0.0.1:%s", mqtts: "127.0.0.1:%s"}
agent:
  containerPrefix: %s-1-
  network: %s-1
`, qs.id, qs.step1Data, qs.step1Port, freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1"), qs.id, qs.id)), 0o644)

	// mosquitto_pub and mosquitto_sub read default options from here.
	xdg := filepath.Join(ws, "xdg")
	os.MkdirAll(xdg, 0o755)
	for _, prog := range []string{"mosquitto_pub", "mosquitto_sub"} {
		os.WriteFile(filepath.Join(xdg, prog), []byte("-p "+qs.mqttPort+"\n"), 0o644)
	}
	// A shell as a user has it: no make, go test or ledge variables of
	// ours.
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "MAKEFLAGS" || k == "MFLAGS" || k == "MAKELEVEL" || strings.HasPrefix(k, "LEDGE_") || k == "XDG_CONFIG_HOME" || k == "XDG_RUNTIME_DIR":
			continue
		}
		qs.env = append(qs.env, kv)
	}
	qs.env = append(qs.env, "LEDGE_RUNTIME_DIR="+filepath.Join(ws, "run"), "XDG_CONFIG_HOME="+xdg)

	t.Cleanup(func() {
		testenv.RemoveDocker("name=^"+qs.id, qs.id, qs.id+"-1")
	})
	return qs
}

// copyTracked copies the files git tracks (as they are in the working
// tree) from repo to dir: what a fresh clone holds.
func copyTracked(t *testing.T, repo, dir string) {
	t.Helper()
	out, err := exec.Command("git", "-C", repo, "ls-files", "-z").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	for _, f := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		src := filepath.Join(repo, f)
		st, err := os.Lstat(src)
		if err != nil {
			continue // deleted in the working tree
		}
		dst := filepath.Join(dir, f)
		os.MkdirAll(filepath.Dir(dst), 0o755)
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, st.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
}

// freePort returns a port nobody listens on, on host ("" for all
// interfaces).
func freePort(t *testing.T, host string) string {
	t.Helper()
	l, err := net.Listen("tcp", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, p, _ := net.SplitHostPort(l.Addr().String())
	return p
}

var (
	stepRe  = regexp.MustCompile(`(?m)^\d+\. \*\*`)
	blockRe = regexp.MustCompile("(?ms)^[ \\t]*```(\\w*)[ \\t]*\\n(.*?)^[ \\t]*```")
)

// steps reads the copy's README: the numbered steps of its Quickstart and
// the commands of their sh blocks.
func (qs *quickstart) steps() []qsStep {
	data, _ := os.ReadFile(filepath.Join(qs.dir, "README.md"))
	s := string(data)
	i := strings.Index(s, "\n## Quickstart")
	if i < 0 {
		return nil
	}
	s = s[i+1:]
	if j := strings.Index(s[3:], "\n## "); j >= 0 {
		s = s[:j+3]
	}
	idx := stepRe.FindAllStringIndex(s, -1)
	var out []qsStep
	for k, at := range idx {
		end := len(s)
		if k+1 < len(idx) {
			end = idx[k+1][0]
		}
		st := qsStep{text: s[at[0]:end]}
		for _, m := range blockRe.FindAllStringSubmatch(st.text, -1) {
			if m[1] != "sh" {
				continue
			}
			for _, line := range strings.Split(m[2], "\n") {
				if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
					st.commands = append(st.commands, line)
				}
			}
		}
		out = append(out, st)
	}
	return out
}

// command makes the shell command of a README line, in the copy.
func (qs *quickstart) command(line string, env []string) *exec.Cmd {
	line = strings.ReplaceAll(line, "/tmp/", qs.tmp+"/")
	cmd := exec.Command("bash", "-c", line)
	cmd.Dir = qs.dir
	cmd.Env = append(append([]string{}, qs.env...), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// run runs a README line to its end and returns its stdout; it fails the
// test if the line fails.
func (qs *quickstart) run(t *testing.T, line string) string {
	t.Helper()
	cmd := qs.command(line, nil)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", line, err, stdout.String(), stderr.String())
		}
	case <-time.After(5 * time.Minute):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		t.Fatalf("%s: still running after 5 minutes\nstdout:\n%s\nstderr:\n%s", line, stdout.String(), stderr.String())
	}
	t.Logf("$ %s  (%s)\n%s%s", line, time.Since(start).Round(time.Millisecond), stdout.String(), stderr.String())
	return stdout.String()
}

// process is a command left running (a daemon, a subscriber).
type process struct {
	line string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan error
	err  error
	once sync.Once
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (qs *quickstart) start(t *testing.T, line string, env []string) *process {
	t.Helper()
	p := &process{line: line, cmd: qs.command(line, env), out: &syncBuffer{}, done: make(chan error, 1)}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		p.wait(10 * time.Second)
	})
	return p
}

// wait waits for the process to end.
func (p *process) wait(d time.Duration) error {
	select {
	case err := <-p.done:
		p.once.Do(func() { p.err = err })
		p.done <- err
		return err
	case <-time.After(d):
		return fmt.Errorf("still running after %s", d)
	}
}

// interrupt is Ctrl-C in the terminal: SIGINT to the process group. The
// process must end within limit.
func (p *process) interrupt(t *testing.T, limit time.Duration) {
	t.Helper()
	start := time.Now()
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGINT)
	if err := p.wait(2 * limit); err != nil && strings.Contains(err.Error(), "still running") {
		t.Fatalf("%s: %v after Ctrl-C\n%s", p.line, err, p.out.String())
	}
	took := time.Since(start)
	if took > limit {
		t.Errorf("%s: stopped %s after Ctrl-C, the README says within %s", p.line, took.Round(time.Millisecond), limit)
	}
	if !strings.Contains(p.out.String(), `msg=stopped`) {
		t.Errorf("%s: no orderly stop after Ctrl-C:\n%s", p.line, p.out.String())
	}
	t.Logf("%s: stopped %s after Ctrl-C", p.line, took.Round(time.Millisecond))
}

// daemon starts a `make run` line and waits until its dashboard answers on
// port (the first build may take minutes).
func (qs *quickstart) daemon(t *testing.T, line, port string, env []string) *process {
	t.Helper()
	p := qs.start(t, line, env)
	start := time.Now()
	deadline := start.Add(15 * time.Minute)
	for {
		resp, err := http.Get("http://127.0.0.1:" + port + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if p.wait(0) == nil || !strings.Contains(p.wait(0).Error(), "still running") {
			t.Fatalf("%s ended before serving:\n%s", line, p.out.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not serving after 15 minutes:\n%s", line, p.out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("$ %s: serving after %s", line, time.Since(start).Round(time.Millisecond))
	return p
}

var passwordRe = regexp.MustCompile(`(?i)password[^\n=:]{0,40}[=:]\s*"?([A-Za-z0-9_\-+/.~!@#$%^&*]{12,})`)

// checkLogin finds the admin password the first start showed (in the
// terminal, or in a file of the data dir) and logs in with it.
func (qs *quickstart) checkLogin(t *testing.T, p *process, port, dataDir string) {
	t.Helper()
	var candidates []string
	deadline := time.Now().Add(10 * time.Second)
	for len(candidates) == 0 && time.Now().Before(deadline) {
		for _, m := range passwordRe.FindAllStringSubmatch(p.out.String(), -1) {
			candidates = append(candidates, m[1])
		}
		files, _ := filepath.Glob(filepath.Join(dataDir, "*password*"))
		for _, f := range files {
			if data, err := os.ReadFile(f); err == nil {
				sc := bufio.NewScanner(bytes.NewReader(data))
				for sc.Scan() {
					if w := strings.TrimSpace(sc.Text()); w != "" {
						candidates = append(candidates, w)
					}
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(candidates) == 0 {
		t.Fatalf("step 1: no admin password shown in the terminal or the data dir:\n%s", p.out.String())
	}
	for _, pw := range candidates {
		body, _ := json.Marshal(map[string]string{"password": pw})
		resp, err := http.Post("http://127.0.0.1:"+port+"/api/v1/auth/login", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			return
		}
	}
	t.Errorf("step 1: none of the passwords shown logs in (%d tried):\n%s", len(candidates), p.out.String())
}

// adaptExampleConfig moves the listeners of the example config a `make
// run` line names to free ports, and names its containers, network and
// device after the test.
func (qs *quickstart) adaptExampleConfig(t *testing.T, line string) {
	t.Helper()
	m := regexp.MustCompile(`--config ([^\s"']+)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("%s: no --config", line)
	}
	file := filepath.Join(qs.dir, m[1])
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	listen := regexp.MustCompile(`(?m)^  listen: .*$`)
	if len(listen.FindAll(data, -1)) != 1 {
		t.Fatalf("%s: want exactly one http listen line to move", m[1])
	}
	data = regexp.MustCompile(`(?m)^  listenTLS: .*\n`).ReplaceAll(data, nil) // moved with listen
	data = listen.ReplaceAll(data, []byte(fmt.Sprintf("  listen: \"127.0.0.1:%s\"\n  listenTLS: \"127.0.0.1:%s\"", qs.step2Port, freePort(t, "127.0.0.1"))))
	data = append(data, fmt.Sprintf(`
# Added by TestQuickstart: free ports, names of its own.
deviceId: %s
hub:
  listen: {mqtt: ":%s", mqtts: ":%s"}  # modules connect to the host's address on the module network
agent:
  containerPrefix: %s-
  network: %s
`, qs.id, qs.mqttPort, freePort(t, ""), qs.id, qs.id)...)
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkPattern: the test pattern pipeline runs, its stream sends frames,
// and its data dir is beside the example config.
func (qs *quickstart) checkPattern(t *testing.T) {
	t.Helper()
	base := "http://127.0.0.1:" + qs.step2Port + "/api/v1"
	deadline := time.Now().Add(30 * time.Second)
	for {
		var list struct {
			Pipelines []struct {
				Name, State string
				FPSIn       float64 `json:"fpsIn"`
			}
		}
		resp, err := http.Get(base + "/pipelines")
		if err == nil {
			json.NewDecoder(resp.Body).Decode(&list)
			resp.Body.Close()
		}
		if len(list.Pipelines) == 1 && list.Pipelines[0].State == "running" && list.Pipelines[0].FPSIn > 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("step 2: the test pattern does not run: %+v %v", list, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	resp, err := http.Get(base + "/pipelines/pattern/stream.mjpeg")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 64<<10)
	var got []byte
	for !bytes.Contains(got, []byte{0xff, 0xd8, 0xff}) && len(got) < 1<<20 {
		n, err := resp.Body.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			break
		}
	}
	if !bytes.Contains(got, []byte{0xff, 0xd8, 0xff}) {
		t.Errorf("step 2: no JPEG on the Live stream (%d bytes)", len(got))
	}
	if _, err := os.Stat(filepath.Join(qs.dir, "deploy", "examples", "ledge-data", "ledge.sock")); err != nil {
		t.Errorf("step 2: the data dir is not deploy/examples/ledge-data: %v", err)
	}
}

// subscriber starts mosquitto_sub with the user and topic of a
// mosquitto_pub line, for one message, and returns once the hub
// acknowledged its subscription (the hub keeps no plain-topic message for
// a subscriber that comes later).
func (qs *quickstart) subscriber(t *testing.T, pub string) *process {
	t.Helper()
	testenv.Command(t, "stdbuf", "coreutils")
	// -d says when the SUBACK came; stdbuf makes its lines come as lines.
	sub := strings.Replace(pub, "mosquitto_pub", "stdbuf -oL mosquitto_sub -d -C 1 -W 30", 1)
	sub = regexp.MustCompile(` -m \S+`).ReplaceAllString(sub, "")
	p := qs.start(t, sub, nil)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.out.String(), "received SUBACK") {
		if err := p.wait(0); time.Now().After(deadline) || err == nil || !strings.Contains(err.Error(), "still running") {
			t.Fatalf("%s: no SUBACK within 10 s:\n%s", sub, p.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p
}

// checkReceiverGets: the receiver module logs the messages the route
// passes it from the sender.
func (qs *quickstart) checkReceiverGets(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _ := testenv.DockerOutput("logs", qs.id+"-receiver")
		if strings.Contains(string(out), "got ") {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("step 5: the receiver got nothing through the route in 30 s:\n%s", out)
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}
