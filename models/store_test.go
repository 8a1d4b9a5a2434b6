package models

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"ledge/internal/fault"
	"ledge/internal/testenv"
)

// TestGoodDownloadActivates: a model served over https is downloaded,
// verified, stored under its digest and activated; progress events say
// bytes, percent and rate.
func TestGoodDownloadActivates(t *testing.T) {
	srv := newModelServer(t)
	srv.throttle = 2 * time.Millisecond // about 8 MB/s: several progress events
	data := modelFile(t, "yolox_nano.onnx")
	url := srv.add("/people-1.onnx", data)
	env := openStore(t, srv, testConfig(), nil)
	events, cancel := env.s.Subscribe(4096)
	defer cancel()

	sp := spec("people", "1", url, data)
	sp.Kind, sp.Labels = "yolox", []string{"person", "bicycle"}
	if err := env.s.SetDesired(t.Context(), []Spec{sp}); err != nil {
		t.Fatal(err)
	}
	waitState(t, env.s, "people", "1", StateActive)
	v, err := env.s.Resolve("people")
	if err != nil {
		t.Fatal(err)
	}
	if v.Version != "1" || v.Kind != "yolox" || len(v.Labels) != 2 || v.Size != int64(len(data)) {
		t.Errorf("resolved %+v", v)
	}
	if want := filepath.Join(env.dir, "blobs", digestOf(data)); v.Path != want {
		t.Errorf("path %s, want %s", v.Path, want)
	}
	got, err := os.ReadFile(v.Path)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("stored file differs (%v)", err)
	}
	if st, _ := os.Stat(v.Path); st.Mode().Perm()&0o222 != 0 {
		t.Errorf("stored file is writable: %v", st.Mode())
	}
	if rep := env.s.Report(); rep.State != "ready" || rep.Items["people"].State != StateActive {
		t.Errorf("report %+v", rep)
	}

	// The state is stored before its event goes out: read the events up
	// to the active one (not cancel at once, which can come before it).
	var states []State
	var progress []Progress
	timeout := time.After(10 * time.Second)
	for !containsState(states, StateActive) {
		select {
		case ev := <-events:
			switch ev.Type {
			case EventState:
				states = append(states, ev.State)
			case EventProgress:
				progress = append(progress, *ev.Progress)
			}
		case <-timeout:
			t.Fatalf("no active event in 10 s after the state was active: %v", states)
		}
	}
	cancel()
	for _, want := range []State{StateQueued, StateDownloading, StateVerifying, StateReady, StateActivating, StateActive} {
		if !containsState(states, want) {
			t.Errorf("no %s event in %v", want, states)
		}
	}
	if len(progress) < 3 {
		t.Fatalf("%d progress events, want several", len(progress))
	}
	last := progress[len(progress)-1]
	sawRate := false
	for i, p := range progress {
		if p.Total != int64(len(data)) || p.Percent < 0 || p.Percent > 100 {
			t.Errorf("progress %d: %+v", i, p)
		}
		if i > 0 && p.Bytes < progress[i-1].Bytes {
			t.Errorf("progress went back: %+v after %+v", p, progress[i-1])
		}
		sawRate = sawRate || p.Rate > 0
	}
	if !sawRate || last.Bytes == 0 {
		t.Errorf("no rate in progress events: last %+v", last)
	}
}

func containsState(list []State, s State) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestWrongDigestKeepsOld: a file whose sha256 differs from the manifest
// is rejected, leaves no file behind, and the old version stays active.
func TestWrongDigestKeepsOld(t *testing.T) {
	srv := newModelServer(t)
	v1 := randomBytes(300 << 10)
	v2 := randomBytes(300 << 10)
	env := openStore(t, srv, testConfig(), nil)
	if err := env.s.SetDesired(t.Context(), []Spec{spec("people", "1", srv.add("/1", v1), v1)}); err != nil {
		t.Fatal(err)
	}
	waitState(t, env.s, "people", "1", StateActive)

	bad := spec("people", "2", srv.add("/2", v2), randomBytes(10)) // the digest of another file
	if err := env.s.SetDesired(t.Context(), []Spec{bad}); err != nil {
		t.Fatal(err)
	}
	v := waitState(t, env.s, "people", "2", StateFailed)
	if !strings.Contains(v.Error, "digest mismatch") || !strings.Contains(v.Error, bad.SHA256) || strings.Contains(v.Error, digestOf(v2)) {
		t.Errorf("error %q does not name the mismatch, or tells the digest of what was read", v.Error)
	}
	if got, err := env.s.Resolve("people"); err != nil || got.Version != "1" {
		t.Fatalf("resolve after a bad download: %+v %v", got, err)
	}
	rep := env.s.Report()
	if rep.State != "failed" || !strings.Contains(rep.Detail, "people@2 failed") || rep.Items["people"].Active != "1" {
		t.Errorf("report %+v", rep)
	}
	if n := len(srv.requests("/2")); n != 1 {
		t.Errorf("a digest mismatch on a fresh transfer was fetched %d times, want 1 (it is not retried)", n)
	}
	assertNoPartials(t, env.dir)
	if _, err := os.Stat(filepath.Join(env.dir, "blobs", digestOf(v2))); err == nil {
		t.Error("the bad file was stored")
	}
}

func assertNoPartials(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "partial"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Errorf("partial files left: %v", ents)
	}
}

// TestResumeAfterCut: a transfer cut in the middle is resumed with a
// Range request (and If-Range), and the whole file verifies.
func TestResumeAfterCut(t *testing.T) {
	srv := newModelServer(t)
	data := modelFile(t, "fastestdet.onnx")
	url := srv.add("/fd.onnx", data)
	half := int64(len(data) / 2)
	srv.cutAt["/fd.onnx"] = half
	env := openStore(t, srv, testConfig(), nil)
	events, cancel := env.s.Subscribe(4096)
	defer cancel()
	if err := env.s.SetDesired(t.Context(), []Spec{spec("fd", "1", url, data)}); err != nil {
		t.Fatal(err)
	}
	waitState(t, env.s, "fd", "1", StateActive)
	hits := srv.requests("/fd.onnx")
	if len(hits) != 2 {
		t.Fatalf("%d requests, want 2 (cut, then resumed)", len(hits))
	}
	if r := hits[0].Get("Range"); r != "" {
		t.Errorf("first request has Range %q", r)
	}
	rng := hits[1].Get("Range")
	if !strings.HasPrefix(rng, "bytes=") || rng == "bytes=0-" {
		t.Errorf("second request Range %q, want a resume from the cut", rng)
	}
	if hits[1].Get("If-Range") == "" {
		t.Error("resume without If-Range")
	}
	v, _ := env.s.Resolve("fd")
	if got, _ := os.ReadFile(v.Path); !bytes.Equal(got, data) {
		t.Fatal("resumed file differs")
	}
	cancel()
	resumed := false
	for ev := range events {
		if ev.Progress != nil && ev.Progress.Attempt == 2 && ev.Progress.Resumed > 0 {
			resumed = true
		}
	}
	if !resumed {
		t.Error("no progress event of the resumed attempt")
	}
}

// TestResumedMismatchStartsOver: a transfer resumed on a server that
// changed the file but not its ETag ends with a digest mismatch; the
// store starts over once from byte 0 and gets the file whole.
func TestResumedMismatchStartsOver(t *testing.T) {
	srv := newModelServer(t)
	old, data := randomBytes(256<<10), randomBytes(256<<10)
	url := srv.add("/changed.onnx", old)
	srv.cutAt["/changed.onnx"] = 100 << 10
	srv.thenServe["/changed.onnx"] = data
	env := openStore(t, srv, testConfig(), nil)
	sp := spec("m", "1", url, data)
	if err := env.s.SetDesired(t.Context(), []Spec{sp}); err != nil {
		t.Fatal(err)
	}
	waitState(t, env.s, "m", "1", StateActive)
	hits := srv.requests("/changed.onnx")
	if len(hits) != 3 {
		t.Fatalf("%d requests, want 3 (cut, resumed into a mismatch, whole)", len(hits))
	}
	if r := hits[1].Get("Range"); r != "bytes=102400-" {
		t.Errorf("second request Range %q, want a resume from the cut", r)
	}
	if r := hits[2].Get("Range"); r != "" {
		t.Errorf("third request Range %q, want the whole file", r)
	}
	v, _ := env.s.Resolve("m")
	if got, _ := os.ReadFile(v.Path); !bytes.Equal(got, data) {
		t.Fatal("stored file differs")
	}
	assertNoPartials(t, env.dir)
}

// TestStallResumes: a server that stops sending is cut after the stall
// timeout and the transfer resumes.
func TestStallResumes(t *testing.T) {
	srv := newModelServer(t)
	data := randomBytes(512 << 10)
	url := srv.add("/m", data)
	srv.stallAt["/m"] = 100 << 10
	cfg := testConfig()
	cfg.Download.StallTimeout = 300 * time.Millisecond
	env := openStore(t, srv, cfg, nil)
	if err := env.s.SetDesired(t.Context(), []Spec{spec("m", "1", url, data)}); err != nil {
		t.Fatal(err)
	}
	waitState(t, env.s, "m", "1", StateActive)
	hits := srv.requests("/m")
	if len(hits) != 2 || hits[1].Get("Range") != "bytes=102400-" {
		t.Fatalf("requests %d, second Range %q", len(hits), hits[len(hits)-1].Get("Range"))
	}
}

// TestRetriesServerErrors: 5xx answers are retried with back-off; a 404
// is not.
func TestRetriesServerErrors(t *testing.T) {
	srv := newModelServer(t)
	data := randomBytes(64 << 10)
	url := srv.add("/m", data)
	srv.fail["/m"] = 3
	env := openStore(t, srv, testConfig(), nil)
	if err := env.s.SetDesired(t.Context(), []Spec{spec("m", "1", url, data), spec("gone", "1", srv.URL+"/missing", randomBytes(10))}); err != nil {
		t.Fatal(err)
	}
	waitState(t, env.s, "m", "1", StateActive)
	if n := len(srv.requests("/m")); n != 4 {
		t.Errorf("%d requests, want 4 (3 failures, then the file)", n)
	}
	v := waitState(t, env.s, "gone", "1", StateFailed)
	if !strings.Contains(v.Error, "404") {
		t.Errorf("error %q", v.Error)
	}
	if n := len(srv.requests("/missing")); n != 1 {
		t.Errorf("a 404 was fetched %d times", n)
	}
	// Retries give up after download.retries.
	srv.fail["/m2"] = 100
	srv.add("/m2", data)
	data2 := append(append([]byte{}, data...), 1)
	srv.add("/m2", data2)
	srv.fail["/m2"] = 100
	if err := env.s.SetDesired(t.Context(), []Spec{spec("m", "1", url, data), spec("m2", "1", srv.URL+"/m2", data2)}); err != nil {
		t.Fatal(err)
	}
	v = waitState(t, env.s, "m2", "1", StateFailed)
	if n := len(srv.requests("/m2")); n != testConfig().Download.Retries+1 || !strings.Contains(v.Error, "500") {
		t.Errorf("%d requests (want %d), error %q", n, testConfig().Download.Retries+1, v.Error)
	}
}

// TestSignatures: with trusted keys, a bad signature is refused before
// anything is fetched; a good one names its signer; an unsigned model
// passes unless models.requireSignature.
func TestSignatures(t *testing.T) {
	srv := newModelServer(t)
	data := randomBytes(32 << 10)
	url := srv.add("/m", data)
	trusted, priv := newKey(t)
	_, other := newKey(t)
	env := openStore(t, srv, testConfig(), func(o *Options) { o.TrustedKeys = []TrustedKey{trusted} })

	good := spec("m", "1", url, data)
	good.Signature = signDigest(priv, good.SHA256, trusted.ID)
	for _, tc := range []struct {
		name string
		sig  *Signature
		want string
	}{
		{"other key", signDigest(other, good.SHA256, ""), "does not match"},
		{"other key named", signDigest(other, good.SHA256, "0011223344556677"), "not trusted"},
		{"signature of another digest", signDigest(priv, digestOf([]byte("x")), trusted.ID), "does not match"},
	} {
		sp := good
		sp.Signature = tc.sig
		err := env.s.SetDesired(t.Context(), []Spec{sp})
		if !fault.Is(err, fault.Unauthorized) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", tc.name, err)
		}
		if _, perr := env.s.Pull(t.Context(), sp, false); !fault.Is(perr, fault.Unauthorized) {
			t.Errorf("%s: pull: %v", tc.name, perr)
		}
	}
	if len(srv.requests("/m")) != 0 {
		t.Fatal("a badly signed model was fetched")
	}
	if _, err := env.s.Get(t.Context(), "m"); !fault.Is(err, fault.NotFound) {
		t.Errorf("a refused model was recorded: %v", err)
	}
	if err := env.s.SetDesired(t.Context(), []Spec{good}); err != nil {
		t.Fatal(err)
	}
	if v := waitState(t, env.s, "m", "1", StateActive); v.Signer != trusted.ID {
		t.Errorf("signer %q, want %s", v.Signer, trusted.ID)
	}

	cfg := testConfig()
	cfg.RequireSignature = true
	strict := openStore(t, srv, cfg, func(o *Options) { o.TrustedKeys = []TrustedKey{trusted} })
	unsigned := spec("m", "1", url, data)
	if err := strict.s.SetDesired(t.Context(), []Spec{unsigned}); !fault.Is(err, fault.Unauthorized) || !strings.Contains(err.Error(), "not signed") {
		t.Errorf("unsigned with requireSignature: %v", err)
	}
}

// TestRefusals: what the store refuses before fetching, and limits it
// enforces while fetching.
func TestRefusals(t *testing.T) {
	srv := newModelServer(t)
	data := randomBytes(200 << 10)
	url := srv.add("/m", data)
	cfg := testConfig()
	cfg.MaxModelBytes = 100 << 10
	env := openStore(t, srv, cfg, nil)
	for _, tc := range []struct {
		name string
		sp   Spec
		kind fault.Kind
		want string
	}{
		{"plain http", spec("m", "1", "http://example.com/m.onnx", data), fault.Invalid, "allowHTTP"},
		{"unknown kind", func() Spec { s := spec("m", "1", url, data); s.Kind = "ssd"; return s }(), fault.Invalid, "unknown model kind"},
		{"size over the limit", func() Spec { s := spec("m", "1", url, data); s.Size = 1 << 20; return s }(), fault.TooLarge, "maxModelBytes"},
	} {
		_, err := env.s.Check(t.Context(), tc.sp)
		if fault.KindOf(err) != tc.kind || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	// Over the limit, found out from the response.
	if err := env.s.SetDesired(t.Context(), []Spec{spec("big", "1", url, data)}); err != nil {
		t.Fatal(err)
	}
	v := waitState(t, env.s, "big", "1", StateFailed)
	if !strings.Contains(v.Error, "maxModelBytes") {
		t.Errorf("error %q", v.Error)
	}
	// The manifest's size disagrees with the server's.
	small := randomBytes(10 << 10)
	sp := spec("small", "1", srv.add("/small", small), small)
	sp.Size = 5 << 10
	if err := env.s.SetDesired(t.Context(), []Spec{sp}); err != nil {
		t.Fatal(err)
	}
	v = waitState(t, env.s, "small", "1", StateFailed)
	if !strings.Contains(v.Error, "size") {
		t.Errorf("error %q", v.Error)
	}
	// A version's content never changes.
	ok := spec("ok", "1", srv.add("/ok", small), small)
	if err := env.s.SetDesired(t.Context(), []Spec{ok}); err != nil {
		t.Fatal(err)
	}
	waitState(t, env.s, "ok", "1", StateActive)
	other := ok
	other.SHA256 = digestOf([]byte("other"))
	if err := env.s.SetDesired(t.Context(), []Spec{other}); !fault.Is(err, fault.Conflict) || !strings.Contains(err.Error(), "never changes") {
		t.Errorf("same version, another digest: %v", err)
	}
	if v, _ := env.s.Resolve("ok"); v.Digest != digestOf(small) {
		t.Error("a refused spec changed the stored version")
	}
	assertNoPartials(t, env.dir)
}

// TestRedirects: redirects are followed up to the limit and never to
// plain http.
func TestRedirects(t *testing.T) {
	srv := newModelServer(t)
	data := randomBytes(16 << 10)
	target := srv.add("/m", data)
	cfg := testConfig()
	cfg.Download.MaxRedirects = 2
	env := openStore(t, srv, cfg, nil)
	one := srv.URL + "/r1?redirect=" + target
	if err := env.s.SetDesired(t.Context(), []Spec{spec("one", "1", one, data)}); err != nil {
		t.Fatal(err)
	}
	waitState(t, env.s, "one", "1", StateActive)

	chain := target
	for i := range 3 {
		chain = srv.URL + "/r" + string(rune('a'+i)) + "?redirect=" + urlEscape(chain)
	}
	toHTTP := srv.URL + "/rh?redirect=" + urlEscape("http://127.0.0.1:1/m")
	if err := env.s.SetDesired(t.Context(), []Spec{spec("chain", "1", chain, randomBytes(10)), spec("plain", "1", toHTTP, randomBytes(11))}); err != nil {
		t.Fatal(err)
	}
	if v := waitState(t, env.s, "chain", "1", StateFailed); !strings.Contains(v.Error, "redirects") {
		t.Errorf("chain: %q", v.Error)
	}
	if v := waitState(t, env.s, "plain", "1", StateFailed); !strings.Contains(v.Error, "plain http") {
		t.Errorf("plain: %q", v.Error)
	}
}

func urlEscape(s string) string {
	return strings.NewReplacer("%", "%25", "&", "%26", "?", "%3F", "=", "%3D").Replace(s)
}

// TestFileURL: file:/// sources under models.fileRoots are copied into
// the store; others are refused.
func TestFileURL(t *testing.T) {
	data := modelFile(t, "fastestdet.onnx")
	path := filepath.Join(t.TempDir(), "fd.onnx")
	os.WriteFile(path, data, 0o644)
	cfg := testConfig()
	env := openStore(t, nil, cfg, nil)
	err := env.s.SetDesired(t.Context(), []Spec{spec("fd", "1", "file://"+path, data)})
	if !fault.Is(err, fault.Invalid) || !strings.Contains(err.Error(), "models.fileRoots") {
		t.Fatalf("a file outside models.fileRoots: %v", err)
	}
	cfg.FileRoots = []string{filepath.Dir(path)}
	env = openStore(t, nil, cfg, nil)
	if err := env.s.SetDesired(t.Context(), []Spec{spec("fd", "1", "file://"+path, data)}); err != nil {
		t.Fatal(err)
	}
	v := waitState(t, env.s, "fd", "1", StateActive)
	os.Remove(path)
	got, err := os.ReadFile(filepath.Join(env.dir, "blobs", v.Digest))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("stored copy differs: %v", err)
	}
}

// fakeActivator stands in for the pipeline engine to inject a load
// failure; the real engine is tested in appliance. It notes each call, and
// what the store resolved the name to when it was committed.
type fakeActivator struct {
	mu    sync.Mutex
	fail  map[string]error // by version
	calls []string
	store *Store // when set, Commit notes what it resolves the name to
}

func (f *fakeActivator) note(call string) {
	f.mu.Lock()
	f.calls = append(f.calls, call)
	f.mu.Unlock()
}

func (f *fakeActivator) Prepare(_ context.Context, v Version) (Prepared, error) {
	f.note("prepare " + v.Ref())
	f.mu.Lock()
	err := f.fail[v.Version]
	f.mu.Unlock()
	if _, statErr := os.Stat(v.Path); statErr != nil {
		return nil, statErr
	}
	if err != nil {
		return nil, err
	}
	return fakePrepared{f, v}, nil
}

type fakePrepared struct {
	f *fakeActivator
	v Version
}

func (p fakePrepared) Commit() {
	call := "commit " + p.v.Ref()
	p.f.mu.Lock()
	st := p.f.store
	p.f.mu.Unlock()
	if st != nil {
		r, _ := st.Resolve(p.v.Name)
		call += " (resolves to " + r.Version + ")"
	}
	p.f.note(call)
}

func (p fakePrepared) Abort() { p.f.note("abort " + p.v.Ref()) }

// TestActivationFailureKeepsOld: a version the activator cannot load is
// marked failed and the old one stays; a later good version activates.
func TestActivationFailureKeepsOld(t *testing.T) {
	srv := newModelServer(t)
	fa := &fakeActivator{fail: map[string]error{"2": errors.New("warm-up: output 0 has 10 values, want 85")}}
	env := openStore(t, srv, testConfig(), func(o *Options) { o.Activator = fa })
	fa.mu.Lock()
	fa.store = env.s
	fa.mu.Unlock()
	files := map[string][]byte{}
	sp := func(v string) Spec {
		files[v] = randomBytes(20 << 10)
		return spec("people", v, srv.add("/"+v, files[v]), files[v])
	}
	if err := env.s.SetDesired(t.Context(), []Spec{sp("1")}); err != nil {
		t.Fatal(err)
	}
	waitState(t, env.s, "people", "1", StateActive)
	if err := env.s.SetDesired(t.Context(), []Spec{sp("2")}); err != nil {
		t.Fatal(err)
	}
	v := waitState(t, env.s, "people", "2", StateFailed)
	if !strings.Contains(v.Error, "warm-up") {
		t.Errorf("error %q", v.Error)
	}
	if r, _ := env.s.Resolve("people"); r.Version != "1" {
		t.Errorf("active %q after a failed activation, want 1", r.Version)
	}
	if rep := env.s.Report(); rep.State != "failed" || !strings.Contains(rep.Detail, "warm-up") {
		t.Errorf("report %+v", rep)
	}
	// Activating it by hand says why it cannot serve.
	if _, err := env.s.Activate(t.Context(), "people", "2"); err == nil || !strings.Contains(err.Error(), "cannot serve") {
		t.Errorf("manual activation of a broken version: %v", err)
	}
	if err := env.s.SetDesired(t.Context(), []Spec{sp("3")}); err != nil {
		t.Fatal(err)
	}
	waitState(t, env.s, "people", "3", StateActive)
	// Each activation is one transaction: prepared, then recorded (the
	// store resolves to the new version), then committed; one that does
	// not prepare is neither committed nor aborted. The state turns active
	// when the version is recorded, just before the commit: wait for it.
	want := []string{"prepare people@1", "commit people@1 (resolves to 1)", "prepare people@2", "prepare people@2",
		"prepare people@3", "commit people@3 (resolves to 3)"}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		fa.mu.Lock()
		n := len(fa.calls)
		fa.mu.Unlock()
		if n >= len(want) {
			break
		}
	}
	fa.mu.Lock()
	defer fa.mu.Unlock()
	if !slices.Equal(fa.calls, want) {
		t.Errorf("activator calls:\n  %s\nwant\n  %s", strings.Join(fa.calls, "\n  "), strings.Join(want, "\n  "))
	}
}

// TestActivationNotRecordedAborts: a version the activator prepared but
// the store could not record (the database refuses the write) is aborted,
// never committed: the old version keeps serving, and the one not recorded
// is not marked failed (the write failing says nothing of it), so the
// next activation of it succeeds. The fault is injected with a trigger in
// the real database.
func TestActivationNotRecordedAborts(t *testing.T) {
	srv := newModelServer(t)
	fa := &fakeActivator{}
	env := openStore(t, srv, testConfig(), func(o *Options) { o.Activator = fa })
	fa.mu.Lock()
	fa.store = env.s
	fa.mu.Unlock()
	d1, d2 := randomBytes(8<<10), randomBytes(8<<10)
	if err := env.s.SetDesired(t.Context(), []Spec{spec("people", "1", srv.add("/1", d1), d1)}); err != nil {
		t.Fatal(err)
	}
	waitState(t, env.s, "people", "1", StateActive)
	if _, err := env.s.Pull(t.Context(), spec("people", "2", srv.add("/2", d2), d2), false); err != nil {
		t.Fatal(err)
	}
	waitState(t, env.s, "people", "2", StateReady)

	if _, err := env.s.db.ExecContext(t.Context(), `CREATE TRIGGER refuse_people_2 BEFORE INSERT ON models_activations
		WHEN NEW.version = '2' BEGIN SELECT RAISE(ABORT, 'injected write failure'); END`); err != nil {
		t.Fatal(err)
	}
	if _, err := env.s.Activate(t.Context(), "people", "2"); err == nil || !strings.Contains(err.Error(), "injected write failure") {
		t.Errorf("activating a version the store cannot record: %v, want the write's error", err)
	}
	if r, _ := env.s.Resolve("people"); r.Version != "1" {
		t.Errorf("resolves to %q after an activation not recorded, want 1", r.Version)
	}
	if v, err := env.s.version(t.Context(), "people", "2"); err != nil || v.State != StateReady {
		t.Errorf("people@2 after its activation was not recorded: %+v %v, want ready", v, err)
	}
	if _, err := env.s.db.ExecContext(t.Context(), `DROP TRIGGER refuse_people_2`); err != nil {
		t.Fatal(err)
	}
	if v, err := env.s.Activate(t.Context(), "people", "2"); err != nil || v.State != StateActive {
		t.Fatalf("activating it again: %+v %v", v, err)
	}
	fa.mu.Lock()
	defer fa.mu.Unlock()
	want := []string{"prepare people@1", "commit people@1 (resolves to 1)",
		"prepare people@2", "abort people@2",
		"prepare people@2", "commit people@2 (resolves to 2)"}
	if !slices.Equal(fa.calls, want) {
		t.Errorf("activator calls:\n  %s\nwant\n  %s", strings.Join(fa.calls, "\n  "), strings.Join(want, "\n  "))
	}
}

// TestPinAndRollback: activate by hand pins; rollback returns to the
// previous version; a deployment that keeps its entry leaves the pin, one
// that changes it wins.
func TestPinAndRollback(t *testing.T) {
	srv := newModelServer(t)
	env := openStore(t, srv, testConfig(), nil)
	specs := map[string]Spec{}
	for _, v := range []string{"1", "2", "3"} {
		d := randomBytes(8 << 10)
		specs[v] = spec("m", v, srv.add("/"+v, d), d)
	}
	apply := func(v string) {
		t.Helper()
		if err := env.s.SetDesired(t.Context(), []Spec{specs[v]}); err != nil {
			t.Fatal(err)
		}
		waitState(t, env.s, "m", v, StateActive)
	}
	apply("1")
	apply("2")
	got, err := env.s.Rollback(t.Context(), "m")
	if err != nil || got.Version != "1" {
		t.Fatalf("rollback: %+v %v", got, err)
	}
	m, _ := env.s.Get(t.Context(), "m")
	if m.Active != "1" || !m.Pinned || m.Desired != "2" {
		t.Errorf("after rollback %+v", m)
	}
	if rep := env.s.Report(); rep.State != "ready" || !rep.Items["m"].Pinned || rep.Items["m"].Active != "1" {
		t.Errorf("report %+v", rep)
	}
	plan, _ := env.s.Plan(t.Context(), []Spec{specs["2"]})
	if len(plan) != 1 || plan[0].Action != "unchanged" {
		t.Errorf("plan %+v", plan)
	}
	// The same deployment again (as at boot) keeps the pin.
	if err := env.s.SetDesired(t.Context(), []Spec{specs["2"]}); err != nil {
		t.Fatal(err)
	}
	assertNothingToFetch(t, env.s, "m")
	if r, _ := env.s.Resolve("m"); r.Version != "1" {
		t.Errorf("a deployment with the same entry undid the pin: %s", r.Version)
	}
	if _, err := env.s.Activate(t.Context(), "m", "2"); err != nil {
		t.Fatal(err)
	}
	apply("3") // a changed entry wins
	if m, _ := env.s.Get(t.Context(), "m"); m.Pinned {
		t.Error("still pinned after a new deployment")
	}
	if _, err := env.s.Activate(t.Context(), "m", "9"); !fault.Is(err, fault.NotFound) {
		t.Errorf("activate a missing version: %v", err)
	}
	if _, err := env.s.Rollback(t.Context(), "nothing"); !fault.Is(err, fault.NotFound) {
		t.Errorf("rollback of an unknown name: %v", err)
	}
}

// TestKeepCollects: only models.keep versions per name stay, with their
// files; the rest are collected.
func TestKeepCollects(t *testing.T) {
	srv := newModelServer(t)
	cfg := testConfig()
	cfg.Keep = 2
	env := openStore(t, srv, cfg, nil)
	var digests []string
	for i, v := range []string{"1", "2", "3", "4"} {
		d := randomBytes(8<<10 + i)
		digests = append(digests, digestOf(d))
		if err := env.s.SetDesired(t.Context(), []Spec{spec("m", v, srv.add("/"+v, d), d)}); err != nil {
			t.Fatal(err)
		}
		waitState(t, env.s, "m", v, StateActive)
	}
	m, _ := env.s.Get(t.Context(), "m")
	var have []string
	for _, v := range m.Versions {
		have = append(have, v.Version)
	}
	if strings.Join(have, ",") != "4,3" {
		t.Errorf("versions kept %v, want [4 3]", have)
	}
	for i, d := range digests {
		_, err := os.Stat(filepath.Join(env.dir, "blobs", d))
		if kept := i >= 2; kept != (err == nil) {
			t.Errorf("version %d: file present %v, want %v", i+1, err == nil, kept)
		}
	}
}

// TestQuota: a download that does not fit evicts versions nothing needs,
// oldest first; when only active versions are left it fails.
func TestQuota(t *testing.T) {
	srv := newModelServer(t)
	cfg := testConfig()
	cfg.QuotaBytes = 250 << 10
	cfg.MaxModelBytes = 200 << 10
	env := openStore(t, srv, cfg, nil)
	add := func(name, v string, size int) Spec {
		d := randomBytes(size)
		return spec(name, v, srv.add("/"+name+v, d), d)
	}
	a1, a2 := add("a", "1", 100<<10), add("a", "2", 100<<10)
	for _, sp := range []Spec{a1, a2} {
		if err := env.s.SetDesired(t.Context(), []Spec{sp}); err != nil {
			t.Fatal(err)
		}
		waitState(t, env.s, "a", sp.Version, StateActive)
	}
	// a@1 is kept (keep 3) but not needed: b@1 evicts it.
	b1 := add("b", "1", 100<<10)
	if err := env.s.SetDesired(t.Context(), []Spec{a2, b1}); err != nil {
		t.Fatal(err)
	}
	waitState(t, env.s, "b", "1", StateActive)
	if _, err := os.Stat(filepath.Join(env.dir, "blobs", a1.SHA256)); err == nil {
		t.Error("a@1 was not evicted")
	}
	if st := env.s.Stats(); st.StoredBytes > cfg.QuotaBytes {
		t.Errorf("stored %d bytes over the quota %d", st.StoredBytes, cfg.QuotaBytes)
	}
	c1 := add("c", "1", 100<<10)
	if err := env.s.SetDesired(t.Context(), []Spec{a2, b1, c1}); err != nil {
		t.Fatal(err)
	}
	if v := waitState(t, env.s, "c", "1", StateFailed); !strings.Contains(v.Error, "quotaBytes") {
		t.Errorf("error %q", v.Error)
	}
	assertNoPartials(t, env.dir)
}

// TestNamesNeverBecomePaths: names and versions that try to leave the
// store are refused; files are named by digest only.
func TestNamesNeverBecomePaths(t *testing.T) {
	env := openStore(t, nil, testConfig(), nil)
	for _, ref := range []string{"../x@1", "x@../1", "a/b@1", "x@1/2", ".hidden@1", "x@", "@1", "m.onnx@1", "x@1 2"} {
		if _, _, err := ParseRef(ref); err == nil {
			t.Errorf("ParseRef(%q) accepted", ref)
		}
	}
	for _, raw := range []string{
		`[{"name":"../../etc","version":"1","url":"https://h/m","sha256":"` + strings.Repeat("a", 64) + `"}]`,
		`[{"name":"m","version":"../1","url":"https://h/m","sha256":"` + strings.Repeat("a", 64) + `"}]`,
		`[{"name":"m","version":"1","url":"https://h/m","sha256":"../../../../etc/passwd"}]`,
	} {
		if _, err := env.s.CheckSection(t.Context(), []byte(raw)); !fault.Is(err, fault.Invalid) {
			t.Errorf("%s: %v", raw, err)
		}
	}
	if _, err := env.s.Activate(t.Context(), "../x", "1"); !fault.Is(err, fault.Invalid) {
		t.Errorf("activate ../x: %v", err)
	}
}

// TestStrayFilesRemoved: files nothing refers to (a crashed ledge's
// leftovers, or anything else put there) are removed at open.
func TestStrayFilesRemoved(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "models")
	for _, p := range []string{"blobs/" + strings.Repeat("b", 64), "blobs/notes.txt", "partial/" + strings.Repeat("c", 64), "partial/x.tmp"} {
		os.MkdirAll(filepath.Dir(filepath.Join(store, p)), 0o755)
		os.WriteFile(filepath.Join(store, p), []byte("x"), 0o644)
	}
	openStoreAt(t, nil, testConfig(), filepath.Join(dir, "ledge.db"), store, nil)
	for _, sub := range []string{"blobs", "partial"} {
		if ents, _ := os.ReadDir(filepath.Join(store, sub)); len(ents) != 0 {
			t.Errorf("%s not cleaned: %v", sub, ents)
		}
	}
}

// TestResumeChangedFile: when the file changed on the server between two
// attempts, If-Range makes the server send it whole, and the new bytes
// are what gets verified.
func TestResumeChangedFile(t *testing.T) {
	srv := newModelServer(t)
	old := randomBytes(300 << 10)
	url := srv.add("/m", old)
	srv.cutAt["/m"] = 100 << 10
	want := randomBytes(300 << 10)
	var once sync.Once
	env := openStore(t, srv, testConfig(), nil)
	events, cancel := env.s.Subscribe(1024)
	defer cancel()
	if err := env.s.SetDesired(t.Context(), []Spec{spec("m", "1", url, want)}); err != nil {
		t.Fatal(err)
	}
	// The publisher fixes the file after the first attempt broke.
	go func() {
		for ev := range events {
			if ev.Type == EventState && strings.Contains(ev.Error, "retrying") {
				once.Do(func() { srv.add("/m", want) })
			}
		}
	}()
	waitState(t, env.s, "m", "1", StateActive)
	hits := srv.requests("/m")
	if len(hits) < 2 || hits[1].Get("Range") == "" || hits[1].Get("If-Range") == "" {
		t.Fatalf("requests: %v", hits)
	}
	v, _ := env.s.Resolve("m")
	if got, _ := os.ReadFile(v.Path); !bytes.Equal(got, want) {
		t.Fatal("stored bytes are not the new file")
	}
}

// TestRunLeaksNothing: after Run returns, no goroutine of the store is
// left, even with a transfer cut short by the stop.
func TestRunLeaksNothing(t *testing.T) {
	srv := newModelServer(t)
	data := randomBytes(1 << 20)
	url := srv.add("/m", data)
	srv.throttle = 5 * time.Millisecond
	db := testenv.DB(t)
	before := runtime.NumGoroutine()
	s, err := Open(t.Context(), Options{Config: testConfig(), DB: db, Dir: t.TempDir(),
		TLS: srv.Client().Transport.(*http.Transport).TLSClientConfig})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	if err := s.SetDesired(t.Context(), []Spec{spec("m", "1", url, data)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a transfer", 5*time.Second, func() bool { return s.Stats().DownloadedBytes > 0 })
	cancel()
	<-done
	srv.CloseClientConnections()
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines after stop, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

// TestDownloadRetriesLoggedOnce: a download whose server keeps failing is
// a WARN when its first attempt fails (with the reason) and one when it
// is given up; the retries in between are INFO lines, not a WARN each.
func TestDownloadRetriesLoggedOnce(t *testing.T) {
	srv := newModelServer(t)
	data := randomBytes(16 << 10)
	url := srv.add("/flaky", data)
	srv.fail["/flaky"] = 100
	var logs syncLog
	env := openStore(t, srv, testConfig(), func(o *Options) {
		o.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	if err := env.s.SetDesired(t.Context(), []Spec{spec("flaky", "1", url, data)}); err != nil {
		t.Fatal(err)
	}
	waitState(t, env.s, "flaky", "1", StateFailed)
	log := logs.String()
	if n := strings.Count(log, `level=WARN msg="model download failed, retrying"`); n != 1 {
		t.Errorf("%d WARN lines for the retries of one download, want 1 (the first):\n%s", n, log)
	}
	if n := strings.Count(log, `level=INFO msg="model download failed, retrying"`); n != testConfig().Download.Retries-1 {
		t.Errorf("%d INFO lines for the retries after the first, want %d:\n%s", n, testConfig().Download.Retries-1, log)
	}
	if n := strings.Count(log, `level=WARN msg="model download failed"`); n != 1 || !strings.Contains(log, "500") {
		t.Errorf("%d WARN lines for the download given up, want 1 with the reason:\n%s", n, log)
	}
}

// syncLog is a log sink a test reads while the store writes to it.
type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
