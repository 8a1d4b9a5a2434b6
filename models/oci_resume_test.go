package models

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"ledge/internal/testenv"
)

// blobProxy is an https reverse proxy in front of a real docker-registry
// whose only job is the fault the registry cannot produce on demand: the
// first successful answer for one blob is cut after cutAt body bytes, and
// (corrupt) every later answer for it has its bytes flipped. It records
// each answer for that blob: its Range header, status and body bytes.
type blobProxy struct {
	*httptest.Server
	mu       sync.Mutex
	blob     string // "/blobs/sha256:..." of the faulted layer
	cutAt    int64  // -1 once the cut was made
	corrupt  bool
	noRange  bool // the registry seems not to take ranges: Range is dropped
	inflight int
	answers  []blobAnswer
}

type blobAnswer struct {
	rng    string
	status int
	bytes  int64
}

func newBlobProxy(t *testing.T, reg *testenv.Registry) *blobProxy {
	t.Helper()
	target, _ := url.Parse("https://" + reg.Addr)
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = target.Host
		},
		Transport: &http.Transport{TLSClientConfig: reg.TLS.Clone()},
	}
	p := &blobProxy{cutAt: -1}
	p.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		faulted := p.blob != "" && r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, p.blob)
		if !faulted {
			p.mu.Unlock()
			rp.ServeHTTP(w, r)
			return
		}
		p.inflight++
		noRange := p.noRange
		p.mu.Unlock()
		fw := &faultyWriter{ResponseWriter: w, p: p, status: http.StatusOK}
		rng := r.Header.Get("Range")
		defer func() {
			p.mu.Lock()
			p.inflight--
			p.answers = append(p.answers, blobAnswer{rng: rng, status: fw.status, bytes: fw.n})
			p.mu.Unlock()
		}()
		if noRange {
			r.Header.Del("Range")
		}
		rp.ServeHTTP(fw, r)
	}))
	t.Cleanup(p.Close)
	return p
}

// fault arms the proxy for the blob of sha (hex).
func (p *blobProxy) fault(sha string, cutAt int64, corrupt bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blob, p.cutAt, p.corrupt = "/blobs/sha256:"+sha, cutAt, corrupt
}

// served returns the successful (2xx) answers for the faulted blob, once
// no request for it is in flight.
func (p *blobProxy) served(t *testing.T) []blobAnswer {
	t.Helper()
	waitFor(t, "no blob request in flight", 10*time.Second, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.inflight == 0
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []blobAnswer
	for _, a := range p.answers {
		if a.status/100 == 2 {
			out = append(out, a)
		}
	}
	return out
}

type faultyWriter struct {
	http.ResponseWriter
	p      *blobProxy
	status int
	n      int64
	cut    int64 // -1: not this answer
	armed  bool
}

func (f *faultyWriter) WriteHeader(code int) {
	f.status = code
	f.cut = -1
	f.p.mu.Lock()
	if code/100 == 2 {
		if f.p.cutAt >= 0 {
			f.cut, f.p.cutAt = f.p.cutAt, -1
		} else {
			f.armed = f.p.corrupt
		}
	}
	f.p.mu.Unlock()
	f.ResponseWriter.WriteHeader(code)
}

func (f *faultyWriter) Write(b []byte) (int, error) {
	if f.armed {
		b = bytes.Clone(b)
		for i := range b {
			b[i] ^= 0xff
		}
	}
	if f.cut >= 0 && f.n+int64(len(b)) > f.cut {
		k, _ := f.ResponseWriter.Write(b[:f.cut-f.n])
		f.n += int64(k)
		http.NewResponseController(f.ResponseWriter).Flush()
		panic(http.ErrAbortHandler) // the connection is cut
	}
	k, err := f.ResponseWriter.Write(b)
	f.n += int64(k)
	return k, err
}

func (f *faultyWriter) Unwrap() http.ResponseWriter { return f.ResponseWriter }

// ociEnv is a store that pulls through a blobProxy from a registry,
// with the registry's credentials for the proxy's address.
type ociEnv struct {
	reg   *testenv.Registry
	proxy *blobProxy
	env   *storeEnv
	host  string
}

func newOCIEnv(t *testing.T) *ociEnv {
	t.Helper()
	testenv.Integration(t, "a docker-registry process")
	reg := testenv.OCIRegistry(t)
	p := newBlobProxy(t, reg)
	host := strings.TrimPrefix(p.URL, "https://")
	env := openStore(t, nil, testConfig(), func(o *Options) {
		o.TLS = p.Client().Transport.(*http.Transport).TLSClientConfig
	})
	env.s.SetRegistryAuth(func(h string) (string, string) {
		if h == host {
			return reg.User, reg.Password
		}
		return "", ""
	})
	return &ociEnv{reg: reg, proxy: p, env: env, host: host}
}

// push publishes data to the registry (directly) and returns the spec
// that pulls it by digest through the proxy.
func (e *ociEnv) push(t *testing.T, name, version string, data []byte) Spec {
	t.Helper()
	file := filepath.Join(t.TempDir(), name+".onnx")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	ref := OCIRef{Host: e.reg.Addr, Repo: "ledge-test/" + name, Reference: version}
	pinned, sum, err := OCIClient{TLS: e.reg.TLS, Username: e.reg.User, Password: e.reg.Password}.PushOCI(t.Context(), file, ref, PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sum != digestOf(data) {
		t.Fatalf("pushed sha256 %s, want %s", sum, digestOf(data))
	}
	pinned.Host = e.host
	return Spec{Name: name, Version: version, URL: pinned.String(), SHA256: sum}
}

// TestOCIResumeAfterCut: an oci:// download whose blob transfer breaks
// midway resumes with a range request from where it stopped (not from
// byte 0, and without fetching the blob from its start again), as for
// https, and the whole file verifies and becomes active.
func TestOCIResumeAfterCut(t *testing.T) {
	e := newOCIEnv(t)
	data := modelFile(t, "fastestdet.onnx")
	sp := e.push(t, "fd", "1", data)
	cut := int64(len(data) / 3)
	e.proxy.fault(sp.SHA256, cut, false)
	if err := e.env.s.SetDesired(t.Context(), []Spec{sp}); err != nil {
		t.Fatal(err)
	}
	waitState(t, e.env.s, "fd", "1", StateActive)
	got := e.proxy.served(t)
	if len(got) != 2 {
		t.Fatalf("blob answers %+v, want 2 (cut, then resumed)", got)
	}
	if got[0].rng != "" || got[0].bytes != cut {
		t.Errorf("first answer %+v, want the whole blob asked for and %d bytes sent before the cut", got[0], cut)
	}
	if want := fmt.Sprintf("bytes=%d-", cut); !strings.HasPrefix(got[1].rng, want) || got[1].status != http.StatusPartialContent {
		t.Errorf("second answer %+v, want Range %s... answered 206", got[1], want)
	}
	if rest := int64(len(data)) - cut; got[1].bytes != rest {
		t.Errorf("the resumed answer sent %d bytes, want the %d after the cut", got[1].bytes, rest)
	}
	e.assertActive(t, "fd", "1", data)
}

// TestOCIResumeRangeIgnored: a registry (or the object storage it
// redirects to) that ignores the range request answers 200 with the whole
// blob: the store takes that answer from byte 0 (one request, not the
// range and then the blob again) and the file verifies.
func TestOCIResumeRangeIgnored(t *testing.T) {
	e := newOCIEnv(t)
	data := modelFile(t, "fastestdet.onnx")
	sp := e.push(t, "fd", "1", data)
	cut := int64(len(data) / 3)
	e.proxy.fault(sp.SHA256, cut, false)
	e.proxy.mu.Lock()
	e.proxy.noRange = true
	e.proxy.mu.Unlock()
	if err := e.env.s.SetDesired(t.Context(), []Spec{sp}); err != nil {
		t.Fatal(err)
	}
	waitState(t, e.env.s, "fd", "1", StateActive)
	got := e.proxy.served(t)
	if len(got) != 2 {
		t.Fatalf("blob answers %+v, want 2 (cut, then the range asked for and the whole blob sent)", got)
	}
	if want := fmt.Sprintf("bytes=%d-", cut); !strings.HasPrefix(got[1].rng, want) || got[1].status != http.StatusOK || got[1].bytes != int64(len(data)) {
		t.Errorf("second answer %+v, want Range %s... answered 200 with all %d bytes", got[1], want, len(data))
	}
	e.assertActive(t, "fd", "1", data)
}

// TestOCIResumedCorruptRefused: when the bytes after the cut are not the
// blob's (the proxy flips them, on the resumed request and on the fresh
// one the store starts over with), the sha256 check refuses the file: the
// version fails with a digest mismatch, is not activated, and the active
// version stays.
func TestOCIResumedCorruptRefused(t *testing.T) {
	e := newOCIEnv(t)
	good := modelFile(t, "fastestdet.onnx")
	bad := modelFile(t, "yolox_nano.onnx")
	sp1 := e.push(t, "people", "1", good)
	sp2 := e.push(t, "people", "2", bad)
	if err := e.env.s.SetDesired(t.Context(), []Spec{sp1}); err != nil {
		t.Fatal(err)
	}
	waitState(t, e.env.s, "people", "1", StateActive)
	cut := int64(1 << 20)
	e.proxy.fault(sp2.SHA256, cut, true)
	if err := e.env.s.SetDesired(t.Context(), []Spec{sp2}); err != nil {
		t.Fatal(err)
	}
	v := waitState(t, e.env.s, "people", "2", StateFailed)
	if !strings.Contains(v.Error, "digest mismatch") {
		t.Errorf("error %q, want a digest mismatch", v.Error)
	}
	got := e.proxy.served(t)
	if len(got) != 3 {
		t.Fatalf("blob answers %+v, want 3 (cut, resumed into a mismatch, whole once more)", got)
	}
	if got[0].rng != "" || got[0].bytes != cut {
		t.Errorf("first answer %+v, want the whole blob asked for, cut after %d bytes", got[0], cut)
	}
	if want := fmt.Sprintf("bytes=%d-", cut); !strings.HasPrefix(got[1].rng, want) || got[1].bytes != int64(len(bad))-cut {
		t.Errorf("second answer %+v, want Range %s... and the %d bytes after the cut", got[1], want, int64(len(bad))-cut)
	}
	if got[2].rng != "" || got[2].bytes != int64(len(bad)) {
		t.Errorf("third answer %+v, want the whole blob from byte 0", got[2])
	}
	if a, err := e.env.s.Resolve("people"); err != nil || a.Version != "1" {
		t.Errorf("active %+v %v, want people@1 still", a, err)
	}
	if _, err := os.Stat(e.env.s.blobPath(sp2.SHA256)); err == nil {
		t.Error("the refused file is in the store")
	}
	assertNoPartials(t, e.env.dir)
}

// assertActive checks that name's active version is version, stored as
// data, with no partial download left.
func (e *ociEnv) assertActive(t *testing.T, name, version string, data []byte) {
	t.Helper()
	v, err := e.env.s.Resolve(name)
	if err != nil || v.Version != version {
		t.Fatalf("active %+v %v, want version %s", v, err, version)
	}
	if b, _ := os.ReadFile(v.Path); !bytes.Equal(b, data) {
		t.Fatal("the stored file differs from the pushed one")
	}
	assertNoPartials(t, e.env.dir)
}
