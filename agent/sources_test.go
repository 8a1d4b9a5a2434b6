package agent

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// manifestServer serves a manifest with an ETag, and its signature at
// .sig when it has one.
type manifestServer struct {
	mu        sync.Mutex
	body      string
	sig       []byte
	etag      string
	inm       []string // If-None-Match headers seen
	notModify int
}

func (s *manifestServer) set(body string, sig []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.body, s.sig, s.etag = body, sig, `"`+Digest([]byte(body))[:12]+`"`
}

func (s *manifestServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if strings.HasSuffix(r.URL.Path, ".sig") {
		if s.sig == nil {
			http.NotFound(w, r)
			return
		}
		w.Write(s.sig)
		return
	}
	s.inm = append(s.inm, r.Header.Get("If-None-Match"))
	if r.Header.Get("If-None-Match") == s.etag {
		s.notModify++
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("ETag", s.etag)
	w.Write([]byte(s.body))
}

func TestHTTPPollerETag(t *testing.T) {
	srv := &manifestServer{}
	srv.set("version: '1'\n", nil)
	ts := httptest.NewServer(srv)
	defer ts.Close()
	p := &httpPoller{cfg: HTTPSourceConfig{URL: ts.URL + "/m.yaml"}, client: ts.Client()}

	o, err := p.poll(t.Context())
	if err != nil || o == nil || string(o.data) != "version: '1'\n" || o.sig != nil {
		t.Fatalf("first poll: %+v, %v", o, err)
	}
	if o, err = p.poll(t.Context()); err != nil || o != nil {
		t.Fatalf("unchanged poll: %+v, %v", o, err)
	}
	if srv.notModify != 1 || srv.inm[1] != srv.etag {
		t.Errorf("If-None-Match sent: %q, 304s: %d", srv.inm, srv.notModify)
	}
	priv, _ := testKey(t)
	srv.set("version: '2'\n", signFor(t, priv, "version: '2'\n"))
	p.needSig = true
	o, err = p.poll(t.Context())
	if err != nil || o == nil || string(o.data) != "version: '2'\n" || o.sig == nil || o.sig.Alg != "ed25519" {
		t.Fatalf("changed poll: %+v, %v", o, err)
	}
	// An envelope carries its own signature.
	k, _ := ParsePrivateKey(priv)
	s := Sign(k, []byte("version: '3'\n"))
	env, _ := json.Marshal(Envelope{Manifest: "version: '3'\n", Signature: &s})
	srv.set(string(env), nil)
	if o, err = p.poll(t.Context()); err != nil || o == nil || string(o.data) != "version: '3'\n" || o.sig == nil || o.sig.Sig != s.Sig {
		t.Fatalf("envelope poll: %+v, %v", o, err)
	}
	srv.set(strings.Repeat("x", 2<<20), nil)
	if _, err = p.poll(t.Context()); err == nil || !strings.Contains(err.Error(), "over") {
		t.Errorf("oversized manifest: %v", err)
	}
}

// TestHTTPSource: the agent polls a URL: it applies what is newer,
// ignores what is older, and with trusted keys refuses an unsigned one
// (reported), keeping what runs.
func TestHTTPSource(t *testing.T) {
	priv, pub := testKey(t)
	srv := &manifestServer{}
	v1 := manifestYAML("1", "web "+imgApp+" always 0")
	srv.set(v1, signFor(t, priv, v1))
	ts := httptest.NewServer(srv)
	defer ts.Close()
	ta := newTestAgent(t, withConfig(func(c *Config) {
		c.Sources.HTTP.URL = ts.URL + "/deployment.yaml"
		c.Sources.HTTP.Interval = time.Second
		c.TrustedKeys = []string{pub}
	}))
	ta.waitState("1", StateConverged, 30*time.Second)
	if rep := ta.Reported(); rep.Deployment.Source != SourceHTTP || rep.Deployment.Signer == "" {
		t.Errorf("deployment %+v", rep.Deployment)
	}

	v2 := manifestYAML("2", "web "+imgApp+" always 0", "api "+imgApp+" always 1")
	srv.set(v2, signFor(t, priv, v2))
	ta.waitState("2", StateConverged, 30*time.Second)

	v0 := manifestYAML("0", "old "+imgApp+" always 0")
	mark := ta.mark()
	srv.set(v0, signFor(t, priv, v0))
	// Signed manifests make an older version a refusal (a replay).
	ta.waitLog(mark, 10*time.Second, `msg="manifest rejected; the running deployment stays"`, `version \"0\" is not newer`)
	if d := ta.Reported().Deployment; d.Version != "2" {
		t.Fatalf("an older version from the URL was applied: %+v", d)
	}

	v3 := manifestYAML("3", "web "+imgApp2+" always 0")
	srv.set(v3, nil) // unsigned
	waitFor(t, 10*time.Second, func() (bool, string) {
		rep := ta.Reported()
		return rep.Rejected != nil && strings.Contains(rep.Rejected.Reason, "not signed"), rep.LastDesiredStatus.Description
	})
	if d := ta.Reported().Deployment; d.Version != "2" {
		t.Errorf("after an unsigned manifest: %+v", d)
	}
}

// newHTTPServer serves h on loopback until the test ends and returns its
// base URL.
func newHTTPServer(t testing.TB, h http.Handler) string {
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts.URL
}
