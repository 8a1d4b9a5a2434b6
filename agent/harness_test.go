package agent

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"ledge/internal/fault"
	"ledge/internal/testenv"
)

var instanceSeq atomic.Int64

// testConfig is a config with test-sized times: back-off unit 100 ms,
// convergence after 300 ms up, rollback after 4 s without progress.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Network = testNet
	cfg.StopTimeout = time.Second
	cfg.Restart = RestartConfig{Unit: 100 * time.Millisecond, Max: 2 * time.Second, ResetAfter: time.Minute}
	cfg.Rollback = RollbackConfig{Auto: true, Timeout: 4 * time.Second, StableFor: 300 * time.Millisecond}
	cfg.Sources.MQTT.Enabled = false
	return cfg
}

// testAgent is an agent running against the real engine, with its own
// instance label and container prefix.
type testAgent struct {
	*Agent
	t        testing.TB
	db       *sql.DB
	dbPath   string
	instance string
	prefix   string
	cancel   context.CancelFunc
	done     chan error
	logs     lockedBuffer // the agent's log, at debug
}

// lockedBuffer is a bytes.Buffer safe for concurrent use.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// settledGoroutines is the goroutine count once it stops changing (at
// most 2 s of waiting).
func settledGoroutines() int {
	n := runtime.NumGoroutine()
	for range 100 {
		time.Sleep(20 * time.Millisecond)
		m := runtime.NumGoroutine()
		if m == n {
			return n
		}
		n = m
	}
	return n
}

// mark is where the log ends now, for waitLog.
func (ta *testAgent) mark() int {
	ta.logs.mu.Lock()
	defer ta.logs.mu.Unlock()
	return ta.logs.b.Len()
}

// waitLog waits until the agent logged, after mark, a line holding every
// one of parts: the sign that it has dealt with something that changes
// nothing else.
func (ta *testAgent) waitLog(mark int, timeout time.Duration, parts ...string) {
	ta.t.Helper()
	waitFor(ta.t, timeout, func() (bool, string) {
		for line := range strings.Lines(ta.logs.String()[mark:]) {
			if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(line, p) }) {
				return true, ""
			}
		}
		return false, fmt.Sprintf("no log line with %q", parts)
	})
}

type agentOpt func(*Options)

func newTestAgent(t testing.TB, opts ...agentOpt) *testAgent {
	t.Helper()
	images(t)
	n := instanceSeq.Add(1)
	instance := fmt.Sprintf("lt-%s-%d", testRun, n)
	dbPath := filepath.Join(t.TempDir(), "ledge.db")
	ta := &testAgent{t: t, instance: instance, prefix: fmt.Sprintf("lt%s%d-", testRun, n), dbPath: dbPath}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		removeInstances(ctx, docker(t), instance)
	})
	ta.start(opts...)
	return ta
}

// start runs an agent on the test's database (again, after stop).
func (ta *testAgent) start(opts ...agentOpt) {
	t := ta.t
	t.Helper()
	ta.db = testenv.DBAt(t, ta.dbPath)
	cfg := testConfig()
	cfg.ContainerPrefix = ta.prefix
	var out io.Writer = &ta.logs
	if os.Getenv("LEDGE_TEST_LOG") != "" {
		out = io.MultiWriter(&ta.logs, os.Stderr)
	}
	o := Options{Config: cfg, DB: ta.db, DeviceID: "dev-" + ta.instance, Instance: ta.instance,
		Logger: slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name()),
		Build:  VersionInfo{Version: "test"}}
	for _, f := range opts {
		f(&o)
	}
	a, err := New(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	ta.Agent = a
	ctx, cancel := context.WithCancel(context.Background())
	ta.cancel, ta.done = cancel, make(chan error, 1)
	go func() { ta.done <- a.Run(ctx) }()
	t.Cleanup(ta.stop)
}

// stop ends Run (containers keep running) and closes the agent.
func (ta *testAgent) stop() {
	if ta.cancel == nil {
		return
	}
	ta.cancel()
	select {
	case err := <-ta.done:
		if err != nil {
			ta.t.Errorf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		ta.t.Errorf("Run did not return within 20 s of cancel")
	}
	ta.cancel = nil
	ta.Agent.Close()
}

func withConfig(f func(*Config)) agentOpt { return func(o *Options) { f(&o.Config) } }

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("LEDGE_TEST_LOG") != "" {
		l := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		if t != nil {
			l = l.With("test", t.Name())
		}
		return l
	}
	return slog.New(slog.DiscardHandler)
}

// apply applies a manifest, failing the test on error.
func (ta *testAgent) apply(doc string) *ApplyResult {
	ta.t.Helper()
	res, err := ta.Apply(ta.t.Context(), []byte(doc), nil)
	if err != nil {
		ta.t.Fatalf("apply: %v", err)
	}
	return res
}

// waitState waits until the current deployment has version and state.
func (ta *testAgent) waitState(version, state string, timeout time.Duration) *Reported {
	ta.t.Helper()
	var rep *Reported
	waitFor(ta.t, timeout, func() (bool, string) {
		rep = ta.Reported()
		d := rep.Deployment
		if d == nil {
			return false, "no deployment"
		}
		return d.Version == version && d.State == state, fmt.Sprintf("deployment %s is %s (%s); modules %s", d.Version, d.State, d.Reason, moduleSummary(rep))
	})
	return rep
}

func moduleSummary(rep *Reported) string {
	var s []string
	for _, name := range slices.Sorted(maps.Keys(rep.Modules)) {
		m := rep.Modules[name]
		s = append(s, fmt.Sprintf("%s=%s(%s)", name, m.RuntimeStatus, m.StatusDescription))
	}
	return strings.Join(s, " ")
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var why string
	for {
		var ok bool
		if ok, why = cond(); ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ctr is a container as the test sees it.
type ctr struct {
	ID        string
	Name      string
	Module    string
	Image     string
	Running   bool
	StartedAt time.Time
	Env       []string
	Host      *container.HostConfig
	Labels    map[string]string
}

// containers lists the instance's containers by module.
func (ta *testAgent) containers() map[string]ctr {
	ta.t.Helper()
	return instanceContainers(ta.t, ta.instance)
}

func instanceContainers(t testing.TB, instance string) map[string]ctr {
	t.Helper()
	cli := docker(t)
	ctx := context.Background()
	cs, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", labelInstance+"="+instance))})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]ctr{}
	for _, c := range cs {
		in, err := cli.ContainerInspect(ctx, c.ID)
		if err != nil {
			continue
		}
		out[in.Config.Labels[labelModule]] = ctr{ID: in.ID, Name: strings.TrimPrefix(in.Name, "/"), Module: in.Config.Labels[labelModule],
			Image: in.Config.Image, Running: in.State.Running, StartedAt: dockerTime(in.State.StartedAt), Env: in.Config.Env,
			Host: in.HostConfig, Labels: in.Config.Labels}
	}
	return out
}

// recordingSection is a test double of a section owner (the real owners,
// pipelines, routes and models, plug in from their own packages). It
// records what it is given and refuses raw text containing "BROKEN".
type recordingSection struct {
	mu      sync.Mutex
	applied []string
	report  *SectionReport
	failOn  string
}

func (s *recordingSection) Validate(_ context.Context, raw json.RawMessage) error {
	if i := strings.Index(string(raw), "BROKEN"); i >= 0 {
		return fault.New(fault.Invalid, "syntax error at byte %d", i)
	}
	return nil
}

func (s *recordingSection) Plan(_ context.Context, raw json.RawMessage) ([]Change, error) {
	var names map[string]json.RawMessage
	json.Unmarshal(raw, &names)
	var out []Change
	for _, n := range slices.Sorted(maps.Keys(names)) {
		out = append(out, Change{Kind: "route", Name: n, Action: ActionCreate})
	}
	return out, nil
}

func (s *recordingSection) Apply(_ context.Context, raw json.RawMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failOn != "" && strings.Contains(string(raw), s.failOn) {
		return fmt.Errorf("cannot apply %s", s.failOn)
	}
	s.applied = append(s.applied, string(raw))
	return nil
}

func (s *recordingSection) Report() SectionReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.report != nil {
		return *s.report
	}
	return SectionReport{State: SectionReady}
}

func (s *recordingSection) calls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.applied...)
}

// manifestYAML writes a native manifest of modules given as
// "name image restartPolicy startupOrder [cmd...]".
func manifestYAML(version string, modules ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "version: %q\nmodules:\n", version)
	for _, m := range modules {
		f := strings.Fields(m)
		fmt.Fprintf(&b, "  %s:\n    image: %s\n    restartPolicy: %s\n    imagePullPolicy: never\n    startupOrder: %s\n", f[0], f[1], f[2], f[3])
		if len(f) > 4 {
			cmd, _ := json.Marshal(f[4:])
			fmt.Fprintf(&b, "    createOptions: {Cmd: %s}\n", cmd)
		}
	}
	return b.String()
}
