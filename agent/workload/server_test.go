package workload

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ledge/internal/fault"
)

type keys struct{}

func (keys) Sign(_ context.Context, module, genID string, data []byte) ([]byte, error) {
	if genID != "g1" {
		return nil, fault.New(fault.Forbidden, "stale")
	}
	m := hmac.New(sha256.New, []byte(module))
	m.Write(data)
	return m.Sum(nil), nil
}
func (keys) TrustBundle() ([]byte, error) { return []byte("CA"), nil }
func (keys) ServerCertificate(_ context.Context, module, cn string, t time.Time) ([]byte, []byte, time.Time, error) {
	return []byte("C"), []byte("K"), t, nil
}

func newServer(t *testing.T) *Server {
	s, err := New(filepath.Join(t.TempDir(), "workload"), keys{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestRoutes(t *testing.T) {
	s := newServer(t)
	sk := &socket{module: "cam"}
	g := "g1"
	sk.genID.Store(&g)
	h := s.handler(sk)
	for _, tc := range []struct {
		method, path, body string
		status             int
		want               string
	}{
		{"GET", "/trust-bundle?api-version=2018-06-28", "", 200, `{"certificate":"CA"}`},
		{"GET", "/trust-bundle?api-version=2030-01-01", "", 400, `not supported`},
		{"GET", "/trust-bundle", "", 400, `api-version is required`},
		{"POST", "/trust-bundle?api-version=2018-06-28", "", 405, `GET /trust-bundle`},
		{"GET", "/nothing?api-version=2018-06-28", "", 404, `no such workload API route`},
		{"POST", "/modules/cam/genid/g1/sign?api-version=2019-01-30", `{"keyId":"primary","algo":"HMACSHA256","data":"aGVsbG8="}`, 200, `"digest":"`},
		{"POST", "/modules/%63am/genid/g1/sign?api-version=2019-01-30", `{"data":"aGVsbG8="}`, 200, `"digest":"`},
		{"POST", "/modules/%24edgeHub/genid/g1/sign?api-version=2019-01-30", `{"data":"aGVsbG8="}`, 403, `not for \"$edgeHub\"`},
		{"POST", "/modules/cam/genid/g2/sign?api-version=2019-01-30", `{"data":"aGVsbG8="}`, 403, `generation id \"g2\"`},
		{"POST", "/modules/cam/genid/g1/sign?api-version=2019-01-30", `{"algo":"MD5","data":"aGVsbG8="}`, 400, `algo \"MD5\"`},
		{"POST", "/modules/cam/genid/g1/sign?api-version=2019-01-30", `{"data":"!!"}`, 400, `base64`},
		{"POST", "/modules/cam/genid/g1/sign?api-version=2019-01-30", `{"data":`, 400, `malformed JSON`},
		{"POST", "/modules/cam/genid/g1/sign?api-version=2019-01-30", `{"data":"` + strings.Repeat("A", maxBody) + `"}`, 413, `over`},
		{"POST", "/modules/cam/genid/g1/encrypt?api-version=2019-01-30", `{}`, 404, `not served`},
		{"POST", "/modules/cam/genid/g1/certificate/server?api-version=2019-01-30", `{"commonName":"CAM","expiration":"2099-01-01T00:00:00Z"}`, 200, `"privateKey":{"bytes":"K","type":"key"}`},
		{"POST", "/modules/cam/genid/g1/certificate/server?api-version=2019-01-30", `{"commonName":"hub","expiration":"2099-01-01T00:00:00Z"}`, 403, `only have a server certificate for its own name`},
		{"POST", "/modules/cam/genid/g1/certificate/server?api-version=2019-01-30", `{"commonName":"cam","expiration":"2001-01-01T00:00:00Z"}`, 400, `in the past`},
		{"POST", "/modules/cam/sign?api-version=2019-01-30", `{}`, 404, `want /modules/{name}/genid/{genid}/sign`},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body)))
		if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.want) {
			t.Errorf("%s %s: %d %s, want %d with %q", tc.method, tc.path, rec.Code, rec.Body, tc.status, tc.want)
		}
		if tc.status != 200 {
			var m map[string]string
			if json.Unmarshal(rec.Body.Bytes(), &m) != nil || m["message"] == "" {
				t.Errorf("%s %s: error body %q is not {\"message\": ...}", tc.method, tc.path, rec.Body)
			}
		}
	}
}

// TestConnectionLimit: ten connections are served at once; an eleventh
// is closed without an answer, and is served once one of them goes.
func TestConnectionLimit(t *testing.T) {
	s := newServer(t)
	dir, err := s.Ensure("cam", "g1")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, SocketName)
	// Each held connection is answered once (so the server has taken it)
	// and kept open.
	var held []net.Conn
	for range maxConns {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("GET /trust-bundle?api-version=2018-06-28 HTTP/1.1\r\nHost: w\r\n\r\n"))
		buf := make([]byte, 64<<10)
		if n, err := c.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
			t.Fatalf("held connection %d: %q %v", len(held), buf[:n], err)
		}
	}
	get := func() (string, error) {
		c, err := net.Dial("unix", sock)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("GET /trust-bundle?api-version=2018-06-28 HTTP/1.1\r\nHost: w\r\n\r\n"))
		var b bytes.Buffer
		buf := make([]byte, 512)
		n, err := c.Read(buf)
		b.Write(buf[:n])
		return b.String(), err
	}
	if got, _ := get(); got != "" {
		t.Errorf("an eleventh connection was answered: %q", got)
	}
	held[0].Close()
	var got string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if got, _ = get(); strings.HasPrefix(got, "HTTP/1.1 200") {
			break
		}
	}
	if !strings.HasPrefix(got, "HTTP/1.1 200") {
		t.Errorf("after one closed: %q", got)
	}
	for _, c := range held[1:] {
		c.Close()
	}
}

// TestSocketAgain: Ensure twice keeps one socket and takes the new
// generation id; Close removes the socket file and a new server serves
// the same folder again.
func TestSocketAgain(t *testing.T) {
	root := filepath.Join(t.TempDir(), "w")
	s, err := New(root, keys{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := s.Ensure("cam", "g0")
	if d2, _ := s.Ensure("cam", "g1"); d2 != dir || len(s.socks) != 1 {
		t.Fatalf("second Ensure: %s, %d sockets", d2, len(s.socks))
	}
	s.Close()
	s2, _ := New(root, keys{}, nil)
	defer s2.Close()
	if _, err := s2.Ensure("cam", "g1"); err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(dir, SocketName))
	}}}
	resp, err := c.Post("http://w/modules/cam/genid/g1/sign?api-version=2018-06-28", "application/json", strings.NewReader(`{"data":"aGk="}`))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", resp, err)
	}
	if _, err := s2.Ensure("../x", "g"); err == nil {
		t.Error("a module name with a slash is accepted")
	}
}

// FuzzRequest: whatever the path and body, the handler answers JSON, a
// 200 only for the socket's own module, and never panics.
func FuzzRequest(f *testing.F) {
	f.Add("POST", "/modules/cam/genid/g1/sign?api-version=2018-06-28", `{"data":"aGk="}`)
	f.Add("POST", "/modules/%2e%2e/genid/g1/certificate/server?api-version=2018-06-28", `{"commonName":"cam","expiration":"2099-01-01T00:00:00Z"}`)
	f.Add("GET", "/trust-bundle?api-version=2018-06-28", ``)
	s, _ := New(filepath.Join(f.TempDir(), "w"), keys{}, nil)
	sk := &socket{module: "cam"}
	g := "g1"
	sk.genID.Store(&g)
	h := s.handler(sk)
	f.Fuzz(func(t *testing.T, method, path, body string) {
		req, err := http.NewRequest(method, "http://w"+path, strings.NewReader(body))
		if err != nil || req.URL.Path == "" || !strings.HasPrefix(req.URL.Path, "/") {
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%s %s: not JSON: %q", method, path, rec.Body)
		}
		if rec.Code == 200 && strings.HasPrefix(req.URL.EscapedPath(), "/modules/") {
			name := strings.Split(strings.TrimPrefix(req.URL.EscapedPath(), "/modules/"), "/")[0]
			if n, _ := urlUnescapeForTest(name); n != "cam" {
				t.Fatalf("%s %s: 200 for module %q", method, path, n)
			}
		}
	})
}

func urlUnescapeForTest(s string) (string, error) { return url.PathUnescape(s) }

// A socket path longer than a unix socket can have (107 bytes on Linux)
// is refused saying so and what to shorten, not with bind's "invalid
// argument"; a module name that fits is still served.
func TestSocketPathTooLong(t *testing.T) {
	s, err := New(filepath.Join(t.TempDir(), "workload"), keys{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	long := strings.Repeat("m", 110)
	_, err = s.Ensure(long, "g1")
	if err == nil || !strings.Contains(err.Error(), "107") || !strings.Contains(err.Error(), "shorter dataDir or module name") {
		t.Fatalf("Ensure with a %d-byte module name: %v", len(long), err)
	}
	if _, err := os.Stat(s.Dir(long)); err == nil {
		t.Error("the refused module's folder was made")
	}
	if _, err := s.Ensure("cam", "g1"); err != nil {
		t.Fatal(err)
	}
}
