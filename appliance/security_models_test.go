package appliance

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ledge/internal/fault"
	"ledge/models"
)

// outsideAddr is an IPv4 address of this machine that is neither
// loopback nor link-local (a redirect from it to loopback is one the
// store must refuse).
func outsideAddr(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	t.Fatal("this machine has no IPv4 address besides loopback (the Docker bridge docker0 gives one: is dockerd running? make deps starts it)")
	return ""
}

// serveOn serves h on addr:0 and returns its base URL.
func serveOn(t *testing.T, addr string, h http.Handler) string {
	t.Helper()
	l, err := net.Listen("tcp", addr+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return "http://" + l.Addr().String()
}

// TestModelSourcesBounded (finding 8): a model source file:// outside
// models.fileRoots and the data dir is refused (from the API and from a
// deployment), also behind a link; a digest mismatch does not print the
// digest of what was read; a redirect from the outside to loopback or
// link-local is refused, unless the first URL was already one.
func TestModelSourcesBounded(t *testing.T) {
	roots := t.TempDir()
	cfg := testConfig(t)
	cfg.Hub.Enabled = false
	cfg.Models.AllowHTTP = true
	cfg.Models.Download.Retries = 0
	cfg.Models.FileRoots = []string{roots}
	cfg.Agent.Network = "ledge-test-" + runID()
	app, _ := startApp(t, cfg)
	ctx := t.Context()
	store := app.Models()

	shadow, err := os.ReadFile("/etc/shadow")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(shadow)
	shadowSum := hex.EncodeToString(sum[:])
	guess := strings.Repeat("0", 64)

	// file:// outside the roots: refused before anything is read.
	_, err = store.Pull(ctx, models.Spec{Name: "shadow", Version: "1", URL: "file:///etc/shadow", SHA256: guess}, false)
	if !fault.Is(err, fault.Invalid) || !strings.Contains(err.Error(), "models.fileRoots") {
		t.Fatalf("pull file:///etc/shadow: %v, want refused naming models.fileRoots", err)
	}
	_, err = app.agent.Apply(ctx, []byte("version: \"1\"\nmodels:\n  shadow: {version: \"1\", url: \"file:///etc/shadow\", sha256: \""+guess+"\"}\n"), nil)
	if err == nil || !strings.Contains(err.Error(), "models.fileRoots") {
		t.Fatalf("a deployment with file:///etc/shadow: %v", err)
	}

	// Behind a link in an allowed folder: refused when read.
	if err := os.Symlink("/etc/shadow", filepath.Join(roots, "link.onnx")); err != nil {
		t.Fatal(err)
	}
	wantState := func(name string, state models.State) models.Version {
		t.Helper()
		var v models.Version
		waitUntil(t, 20*time.Second, name+" "+string(state), func() bool {
			m, _ := store.Get(ctx, name)
			if len(m.Versions) > 0 {
				v = m.Versions[0]
			}
			return v.State == state
		})
		return v
	}
	if _, err := store.Pull(ctx, models.Spec{Name: "link", Version: "1", URL: "file://" + filepath.Join(roots, "link.onnx"), SHA256: shadowSum}, false); err != nil {
		t.Fatal(err)
	}
	if v := wantState("link", models.StateFailed); !strings.Contains(v.Error, "models.fileRoots") {
		t.Errorf("a link to /etc/shadow in an allowed folder: %q", v.Error)
	}

	// A digest mismatch says so without the digest of what was read.
	in := filepath.Join(roots, "m.onnx")
	os.WriteFile(in, []byte("not the file you think"), 0o644)
	got := sha256.Sum256([]byte("not the file you think"))
	if _, err := store.Pull(ctx, models.Spec{Name: "wrong", Version: "1", URL: "file://" + in, SHA256: guess}, false); err != nil {
		t.Fatal(err)
	}
	v := wantState("wrong", models.StateFailed)
	if !strings.Contains(v.Error, "digest") || strings.Contains(v.Error, hex.EncodeToString(got[:])) {
		t.Errorf("digest mismatch says %q: it must say so, without the sha256 of what was read", v.Error)
	}
	if _, err := store.Pull(ctx, models.Spec{Name: "inside", Version: "1", URL: "file://" + in, SHA256: hex.EncodeToString(got[:])}, false); err != nil {
		t.Fatal(err)
	}
	wantState("inside", models.StateReady)

	// Redirects towards loopback.
	body := []byte("model bytes served on loopback")
	bsum := sha256.Sum256(body)
	digest := hex.EncodeToString(bsum[:])
	inner := serveOn(t, "127.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	redirect := func(to string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, to, http.StatusFound) })
	}
	_, innerPort, _ := net.SplitHostPort(strings.TrimPrefix(inner, "http://"))
	for i, tc := range []struct {
		first string
		state models.State
		want  string
	}{
		{serveOn(t, outsideAddr(t), redirect(inner+"/m.onnx")), models.StateFailed, "loopback"},
		{serveOn(t, outsideAddr(t), redirect("http://localhost:"+innerPort+"/m.onnx")), models.StateFailed, "loopback"},
		{serveOn(t, outsideAddr(t), redirect("http://169.254.169.254/latest/meta-data/")), models.StateFailed, "link-local"},
		{serveOn(t, "127.0.0.1", redirect(inner+"/m.onnx")), models.StateReady, ""},
	} {
		name := fmt.Sprint("redir", i)
		if _, err := store.Pull(ctx, models.Spec{Name: name, Version: "1", URL: tc.first + "/m.onnx", SHA256: digest}, false); err != nil {
			t.Fatal(err)
		}
		v := wantState(name, tc.state)
		t.Logf("%s: %s %s", name, v.State, v.Error)
		if !strings.Contains(v.Error, tc.want) {
			t.Errorf("%s from %s: %s %q, want it to mention %q", name, tc.first, v.State, v.Error, tc.want)
		}
	}
}
