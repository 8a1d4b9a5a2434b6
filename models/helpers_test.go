package models

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"ledge/internal/testenv"
)

// modelServer serves model files over https (httptest, a real server and
// client), with Range support from net/http, and faults on demand: a
// transfer cut after N bytes, a stall, 5xx answers, redirects.
type modelServer struct {
	*httptest.Server
	mu       sync.Mutex
	files    map[string][]byte
	cutAt    map[string]int64         // the next response to path is cut after N body bytes
	stallAt  map[string]int64         // ... stalls after N body bytes until the client gives up
	fail     map[string]int           // answer this many 500s first
	throttle time.Duration            // sleep per 16 KiB written
	hits     map[string][]http.Header // request headers per path
	// The file that replaces path once its next response is cut, served
	// under the old ETag (a server that changed the file and lies).
	thenServe map[string][]byte
	etags     map[string][]byte // the content whose ETag path is served under
}

func newModelServer(t *testing.T) *modelServer {
	t.Helper()
	m := &modelServer{files: map[string][]byte{}, cutAt: map[string]int64{}, stallAt: map[string]int64{},
		fail: map[string]int{}, hits: map[string][]http.Header{}, thenServe: map[string][]byte{}, etags: map[string][]byte{}}
	m.Server = httptest.NewTLSServer(http.HandlerFunc(m.serve))
	t.Cleanup(m.Close)
	return m
}

func (m *modelServer) add(path string, data []byte) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.files[path] = data
	return m.URL + path
}

func (m *modelServer) requests(path string) []http.Header {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]http.Header(nil), m.hits[path]...)
}

func (m *modelServer) serve(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	m.hits[r.URL.Path] = append(m.hits[r.URL.Path], r.Header.Clone())
	if to := r.URL.Query().Get("redirect"); to != "" {
		m.mu.Unlock()
		http.Redirect(w, r, to, http.StatusFound)
		return
	}
	data, ok := m.files[r.URL.Path]
	fail := m.fail[r.URL.Path]
	if fail > 0 {
		m.fail[r.URL.Path] = fail - 1
	}
	cut, hasCut := m.cutAt[r.URL.Path]
	delete(m.cutAt, r.URL.Path)
	etagOf := data
	if next, ok := m.thenServe[r.URL.Path]; ok && hasCut {
		m.files[r.URL.Path] = next
		delete(m.thenServe, r.URL.Path)
		m.etags[r.URL.Path] = data
	} else if e, ok := m.etags[r.URL.Path]; ok {
		etagOf = e
	}
	stall, hasStall := m.stallAt[r.URL.Path]
	delete(m.stallAt, r.URL.Path)
	throttle := m.throttle
	m.mu.Unlock()
	switch {
	case !ok:
		http.NotFound(w, r)
		return
	case fail > 0:
		http.Error(w, "try later", http.StatusInternalServerError)
		return
	}
	sum := sha256.Sum256(etagOf)
	w.Header().Set("ETag", `"`+hex.EncodeToString(sum[:8])+`"`)
	cw := &faultWriter{ResponseWriter: w, throttle: throttle, cut: -1, stall: -1, ctx: r.Context()}
	if hasCut {
		cw.cut = cut
	}
	if hasStall {
		cw.stall = stall
	}
	http.ServeContent(cw, r, "model.onnx", time.Unix(1700000000, 0), bytes.NewReader(data))
}

// faultWriter passes the body through, throttled, and cuts or stalls it.
type faultWriter struct {
	http.ResponseWriter
	throttle   time.Duration
	cut, stall int64
	n          int64
	ctx        context.Context
}

func (f *faultWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), 16<<10)]
		if f.cut >= 0 && f.n+int64(len(chunk)) > f.cut {
			chunk = chunk[:f.cut-f.n]
			k, _ := f.ResponseWriter.Write(chunk)
			f.n += int64(k)
			f.ResponseWriter.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // the connection is cut
		}
		if f.stall >= 0 && f.n+int64(len(chunk)) > f.stall {
			chunk = chunk[:f.stall-f.n]
			k, _ := f.ResponseWriter.Write(chunk)
			f.n += int64(k)
			f.ResponseWriter.(http.Flusher).Flush()
			<-f.ctx.Done() // until the client gives up
			panic(http.ErrAbortHandler)
		}
		k, err := f.ResponseWriter.Write(chunk)
		f.n += int64(k)
		written += k
		if err != nil {
			return written, err
		}
		p = p[len(chunk):]
		if f.throttle > 0 {
			f.ResponseWriter.(http.Flusher).Flush()
			time.Sleep(f.throttle)
		}
	}
	return written, nil
}

func digestOf(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// assertNothingToFetch checks that no version of name waits for the
// scheduler (queued) or is being fetched: SetDesired decided, when it
// returned, that nothing is to be downloaded, so nothing will be.
func assertNothingToFetch(t *testing.T, s *Store, name string) {
	t.Helper()
	m, err := s.Get(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range m.Versions {
		if v.State == StateQueued || v.State == StateDownloading || v.State == StateVerifying {
			t.Errorf("version %s is %s", v.Version, v.State)
		}
	}
}

// testConfig is fast: short back-off and stall timeout.
func testConfig() Config {
	c := DefaultConfig()
	c.Download.Backoff = 20 * time.Millisecond
	c.Download.MaxBackoff = 100 * time.Millisecond
	c.Download.StallTimeout = 2 * time.Second
	c.Download.ConnectTimeout = 5 * time.Second
	return c
}

type storeEnv struct {
	s      *Store
	dir    string
	dbPath string
	cancel context.CancelFunc
	done   chan error
}

// openStore opens a store in a fresh dir (or dir, when given) with the
// server's TLS roots, and runs it until the test ends.
func openStore(t *testing.T, srv *modelServer, cfg Config, mod func(*Options)) *storeEnv {
	t.Helper()
	dir := t.TempDir()
	return openStoreAt(t, srv, cfg, filepath.Join(dir, "ledge.db"), filepath.Join(dir, "models"), mod)
}

func openStoreAt(t *testing.T, srv *modelServer, cfg Config, dbPath, dir string, mod func(*Options)) *storeEnv {
	t.Helper()
	opts := Options{Config: cfg, DB: testenv.DBAt(t, dbPath), Dir: dir, Logger: testLogger(t),
		Kinds: []string{"yolox", "yolov8", "yolov5", "fastestdet", "classify"}}
	if srv != nil {
		opts.TLS = srv.Client().Transport.(*http.Transport).TLSClientConfig
	}
	if mod != nil {
		mod(&opts)
	}
	s, err := Open(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	env := &storeEnv{s: s, dir: dir, dbPath: dbPath, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	env.cancel = cancel
	go func() { env.done <- s.Run(ctx) }()
	t.Cleanup(env.stop)
	return env
}

func (e *storeEnv) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	<-e.done
	e.cancel = nil
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("LEDGE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitState waits until name@version is in state st, failing early if it
// fails instead.
func waitState(t *testing.T, s *Store, name, version string, st State) Version {
	t.Helper()
	var got Version
	waitFor(t, fmt.Sprintf("%s@%s %s", name, version, st), 20*time.Second, func() bool {
		m, err := s.Get(t.Context(), name)
		if err != nil {
			return false
		}
		for _, v := range m.Versions {
			if v.Version == version {
				got = v
				if v.State == StateFailed && st != StateFailed {
					t.Fatalf("%s@%s failed: %s", name, version, v.Error)
				}
				return v.State == st
			}
		}
		return false
	})
	return got
}

func spec(name, version, url string, data []byte) Spec {
	return Spec{Name: name, Version: version, URL: url, SHA256: digestOf(data)}
}

// modelFile reads a real model from ../shared/models.
func modelFile(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(testenv.Model(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}
