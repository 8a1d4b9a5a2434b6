package models

import (
	"bufio"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"

	"ledge/internal/fault"
)

// TestRestartResumesTransfer: a transfer interrupted by a stop resumes
// from its partial file (Range) after the store is opened again.
func TestRestartResumesTransfer(t *testing.T) {
	srv := newModelServer(t)
	data := randomBytes(600 << 10)
	url := srv.add("/m", data)
	srv.stallAt["/m"] = 200 << 10
	cfg := testConfig()
	cfg.Download.StallTimeout = time.Minute
	dir := t.TempDir()
	dbPath, store := filepath.Join(dir, "ledge.db"), filepath.Join(dir, "models")
	env := openStoreAt(t, srv, cfg, dbPath, store, nil)
	if err := env.s.SetDesired(t.Context(), []Spec{spec("m", "1", url, data)}); err != nil {
		t.Fatal(err)
	}
	part := filepath.Join(store, "partial", digestOf(data))
	waitFor(t, "200 KiB in the partial file", 10*time.Second, func() bool {
		st, err := os.Stat(part)
		return err == nil && st.Size() >= 200<<10
	})
	if _, err := env.s.Resolve("m"); !fault.Is(err, fault.Unavailable) || !strings.Contains(err.Error(), "downloading") {
		t.Errorf("resolve while downloading: %v", err)
	}
	env.stop()
	if st, err := os.Stat(part); err != nil || st.Size() != 200<<10 {
		t.Fatalf("partial file after stop: %v", err)
	}

	env2 := openStoreAt(t, srv, cfg, dbPath, store, nil)
	waitState(t, env2.s, "m", "1", StateActive)
	hits := srv.requests("/m")
	if got := hits[len(hits)-1].Get("Range"); got != "bytes=204800-" {
		t.Errorf("after restart Range %q, want bytes=204800-", got)
	}
	assertNoPartials(t, store)
}

// TestOfflineRestart: with no network, the active versions load from the
// store at once, and nothing is fetched.
func TestOfflineRestart(t *testing.T) {
	srv := newModelServer(t)
	data := randomBytes(64 << 10)
	dir := t.TempDir()
	dbPath, store := filepath.Join(dir, "ledge.db"), filepath.Join(dir, "models")
	env := openStoreAt(t, srv, testConfig(), dbPath, store, nil)
	sp := spec("m", "1", srv.add("/m", data), data)
	if err := env.s.SetDesired(t.Context(), []Spec{sp}); err != nil {
		t.Fatal(err)
	}
	waitState(t, env.s, "m", "1", StateActive)
	env.stop()
	srv.Close() // the network is gone

	fa := &fakeActivator{}
	env2 := openStoreAt(t, nil, testConfig(), dbPath, store, func(o *Options) { o.Activator = fa })
	v, err := env2.s.Resolve("m")
	if err != nil || v.Version != "1" {
		t.Fatalf("resolve after an offline restart: %+v %v", v, err)
	}
	if got, _ := os.ReadFile(v.Path); digestOf(got) != sp.SHA256 {
		t.Fatal("stored file does not verify")
	}
	// The deployment applied again at boot changes nothing.
	if err := env2.s.SetDesired(t.Context(), []Spec{sp}); err != nil {
		t.Fatal(err)
	}
	assertNothingToFetch(t, env2.s, "m")
	if rep := env2.s.Report(); rep.State != "ready" {
		t.Errorf("report %+v", rep)
	}
	if st := env2.s.Stats(); st.DownloadsStarted != 0 {
		t.Errorf("%d downloads started offline", st.DownloadsStarted)
	}
}

// Kill -9: what the store said is ready or active survives a SIGKILL of
// ledge, and a transfer killed in the middle resumes. The child is this
// test binary run with LEDGE_MODELS_CHILD set (see TestMain).

func TestMain(m *testing.M) {
	if os.Getenv("LEDGE_MODELS_CHILD") != "" {
		os.Exit(childMain())
	}
	os.Exit(m.Run())
}

// childMain opens the store named by the environment, asks for one model
// and prints ACTIVE once it is; then it waits to be killed.
func childMain() int {
	db, err := sql.Open("sqlite3", "file:"+os.Getenv("LEDGE_MODELS_DB")+"?_journal_mode=WAL&_synchronous=FULL&_busy_timeout=10000&_txlock=immediate")
	if err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	cfg := testConfig()
	cfg.AllowHTTP = true
	s, err := Open(t0ctx(), Options{Config: cfg, DB: db, Dir: os.Getenv("LEDGE_MODELS_DIR")})
	if err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	go s.Run(t0ctx())
	sp := Spec{Name: "m", Version: os.Getenv("LEDGE_MODELS_VERSION"), URL: os.Getenv("LEDGE_MODELS_URL"), SHA256: os.Getenv("LEDGE_MODELS_SHA")}
	if os.Getenv("LEDGE_MODELS_PULL_ACTIVATE") != "" { // `ledge models pull --activate`
		if _, err := s.Pull(t0ctx(), sp, true); err != nil {
			fmt.Println("ERR", err)
			return 1
		}
		fmt.Println("PULLED")
	} else if err := s.SetDesired(t0ctx(), []Spec{sp}); err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	for {
		if v, err := s.Resolve("m"); err == nil && v.Version == sp.Version {
			fmt.Println("ACTIVE")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestKill9(t *testing.T) {
	dir := t.TempDir()
	dbPath, store := filepath.Join(dir, "ledge.db"), filepath.Join(dir, "models")
	v1 := modelFile(t, "fastestdet.onnx")
	src := filepath.Join(dir, "v1.onnx")
	os.WriteFile(src, v1, 0o644)

	// 1: killed right after it said ACTIVE.
	child := startChild(t, dbPath, store, "1", "file://"+src, digestOf(v1))
	child.waitLine(t, "ACTIVE")
	child.kill(t)
	os.Remove(src)
	env := openStoreAt(t, nil, testConfig(), dbPath, store, nil)
	v, err := env.s.Resolve("m")
	if err != nil || v.Version != "1" {
		t.Fatalf("after kill -9: %+v %v", v, err)
	}
	if got, _ := os.ReadFile(v.Path); digestOf(got) != digestOf(v1) {
		t.Fatal("the stored file does not verify after kill -9")
	}
	env.stop()

	// 2: killed in the middle of a transfer (a slow plain-http server).
	v2 := randomBytes(2 << 20)
	var served atomic.Int64
	var ranges atomic.Value
	ranges.Store("")
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rg := r.Header.Get("Range"); rg != "" {
			ranges.Store(rg)
		}
		w.Header().Set("ETag", `"v2"`)
		fw := &countingWriter{ResponseWriter: w, n: &served, throttle: 5 * time.Millisecond}
		http.ServeContent(fw, r, "m.onnx", time.Unix(1700000000, 0), strings.NewReader(string(v2)))
	}))
	defer slow.Close()
	child = startChild(t, dbPath, store, "2", slow.URL+"/m", digestOf(v2))
	waitFor(t, "half a megabyte sent", 20*time.Second, func() bool { return served.Load() > 512<<10 })
	child.kill(t)
	part := filepath.Join(store, "partial", digestOf(v2))
	st, err := os.Stat(part)
	if err != nil || st.Size() == 0 {
		t.Fatalf("no partial file after kill -9: %v", err)
	}
	cfg := testConfig()
	cfg.AllowHTTP = true
	env = openStoreAt(t, nil, cfg, dbPath, store, nil)
	if v, _ := env.s.Resolve("m"); v.Version != "1" {
		t.Errorf("active after a killed transfer: %q, want 1", v.Version)
	}
	waitState(t, env.s, "m", "2", StateActive)
	if rg, _ := ranges.Load().(string); !strings.HasPrefix(rg, "bytes=") || rg == "bytes=0-" {
		t.Errorf("the killed transfer was not resumed: Range %q", rg)
	}
	v, _ = env.s.Resolve("m")
	f, _ := os.Open(v.Path)
	h := sha256.New()
	io.Copy(h, f)
	f.Close()
	if hex.EncodeToString(h.Sum(nil)) != digestOf(v2) {
		t.Fatal("resumed file does not verify")
	}
}

// TestKill9PullActivate: `ledge models pull --activate` was acknowledged
// (the version is recorded, to be activated once ready); ledge is killed
// in the middle of the transfer. After the restart the transfer resumes
// and the version is activated, as acknowledged: it was left ready.
func TestKill9PullActivate(t *testing.T) {
	dir := t.TempDir()
	dbPath, store := filepath.Join(dir, "ledge.db"), filepath.Join(dir, "models")
	data := randomBytes(2 << 20)
	var served atomic.Int64
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"m"`)
		fw := &countingWriter{ResponseWriter: w, n: &served, throttle: 5 * time.Millisecond}
		http.ServeContent(fw, r, "m.onnx", time.Unix(1700000000, 0), strings.NewReader(string(data)))
	}))
	defer slow.Close()
	child := startChild(t, dbPath, store, "1", slow.URL+"/m", digestOf(data), "LEDGE_MODELS_PULL_ACTIVATE=1")
	child.waitLine(t, "PULLED")
	waitFor(t, "half a megabyte sent", 20*time.Second, func() bool { return served.Load() > 512<<10 })
	child.kill(t)
	cfg := testConfig()
	cfg.AllowHTTP = true
	env := openStoreAt(t, nil, cfg, dbPath, store, nil)
	waitState(t, env.s, "m", "1", StateActive)
	m, err := env.s.Get(t.Context(), "m")
	if err != nil || m.Active != "1" || !m.Pinned {
		t.Errorf("after the restart: %+v %v, want 1 active and pinned (chosen by hand)", m, err)
	}
}

type countingWriter struct {
	http.ResponseWriter
	n        *atomic.Int64
	throttle time.Duration
}

func (c *countingWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), 32<<10)]
		k, err := c.ResponseWriter.Write(chunk)
		written += k
		c.n.Add(int64(k))
		if err != nil {
			return written, err
		}
		c.ResponseWriter.(http.Flusher).Flush()
		time.Sleep(c.throttle)
		p = p[len(chunk):]
	}
	return written, nil
}

type childProc struct {
	cmd   *exec.Cmd
	lines chan string
}

func startChild(t *testing.T, dbPath, store, version, url, sha string, env ...string) *childProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "LEDGE_MODELS_CHILD=1", "LEDGE_MODELS_DB="+dbPath, "LEDGE_MODELS_DIR="+store,
		"LEDGE_MODELS_VERSION="+version, "LEDGE_MODELS_URL="+url, "LEDGE_MODELS_SHA="+sha)
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &childProc{cmd: cmd, lines: make(chan string, 1024)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case c.lines <- sc.Text():
			default:
			}
		}
		close(c.lines)
	}()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return c
}

func (c *childProc) waitLine(t *testing.T, want string) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				t.Fatalf("child exited before %q", want)
			}
			if strings.HasPrefix(l, "ERR") {
				t.Fatalf("child: %s", l)
			}
			if l == want {
				return
			}
		case <-timeout:
			t.Fatalf("child did not print %q", want)
		}
	}
}

func (c *childProc) kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.cmd.Wait()
}

func t0ctx() context.Context { return context.Background() }

// A version pulled from a file (`ledge models pull --file`, which hands it
// over through the import folder, emptied once stored) whose stored copy
// is then lost cannot be fetched again: after a restart it fails saying so
// and what to do, not with the import file's lstat error.
func TestImportedModelLost(t *testing.T) {
	data := randomBytes(32 << 10)
	dir := t.TempDir()
	dbPath, store := filepath.Join(dir, "ledge.db"), filepath.Join(dir, "models")
	withData := func(o *Options) { o.DataDir = dir }
	env := openStoreAt(t, nil, testConfig(), dbPath, store, withData)
	imp := filepath.Join(ImportDir(dir), "m@1.onnx")
	os.MkdirAll(filepath.Dir(imp), 0o700)
	if err := os.WriteFile(imp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := env.s.Pull(t.Context(), spec("m", "1", "file://"+imp, data), false); err != nil {
		t.Fatal(err)
	}
	waitState(t, env.s, "m", "1", StateReady)
	if _, err := os.Stat(imp); err == nil {
		t.Fatal("the import file was kept")
	}
	env.stop()
	blob := env.s.blobPath(digestOf(data))
	os.Chmod(filepath.Dir(blob), 0o700)
	if err := os.Remove(blob); err != nil {
		t.Fatal(err)
	}

	env2 := openStoreAt(t, nil, testConfig(), dbPath, store, withData)
	v := waitState(t, env2.s, "m", "1", StateFailed)
	if !strings.Contains(v.Error, "ledge models pull") || !strings.Contains(v.Error, "--file") || strings.Contains(v.Error, "lstat") {
		t.Errorf("failed with %q: want what happened and to pull it again with --file", v.Error)
	}
}
