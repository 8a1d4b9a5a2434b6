package models

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ledge/internal/testenv"
)

// TestDiskNearlyFull: the store on a 48 MB tmpfs. A download that would
// leave less than the reserve free is refused before a byte is written,
// saying what it needs and what is kept free (the operator sees more free
// bytes than the model's size and must learn why it is refused); a disk
// that fills during a transfer fails the version with ENOSPC and leaves
// no partial file. The active version stays through both.
func TestDiskNearlyFull(t *testing.T) {
	srv := newModelServer(t)
	dir := testenv.Tmpfs(t, "48m")
	env := openStoreAt(t, srv, testConfig(), filepath.Join(t.TempDir(), "ledge.db"), filepath.Join(dir, "models"), nil)
	yolox, fastest := modelFile(t, "yolox_nano.onnx"), modelFile(t, "fastestdet.onnx")
	v1 := spec("people", "1", srv.add("/1", yolox), yolox)
	if err := env.s.SetDesired(t.Context(), []Spec{v1}); err != nil {
		t.Fatal(err)
	}
	waitState(t, env.s, "people", "1", StateActive)
	fill := filepath.Join(dir, "fill")
	if out, err := exec.Command("dd", "if=/dev/zero", "of="+fill, "bs=1M", "count=28").CombinedOutput(); err != nil {
		t.Fatalf("dd: %v %s", err, out)
	}
	if err := env.s.SetDesired(t.Context(), []Spec{spec("people", "2", srv.add("/2", fastest), fastest)}); err != nil {
		t.Fatal(err)
	}
	v := waitState(t, env.s, "people", "2", StateFailed)
	if !strings.Contains(v.Error, "not enough disk space") || !strings.Contains(v.Error, "32 MiB are kept free") {
		t.Errorf("error %q: want it to say the reserve kept free", v.Error)
	}
	if r, _ := env.s.Resolve("people"); r.Version != "1" {
		t.Errorf("active %q, want 1", r.Version)
	}
	assertNoPartials(t, env.dir)

	// Room again, then the disk fills during the transfer.
	os.Remove(fill)
	srv.mu.Lock()
	srv.throttle = 20 * time.Millisecond // per 16 KiB: about 1.3 s for the file
	srv.mu.Unlock()
	if err := env.s.SetDesired(t.Context(), []Spec{spec("people", "3", srv.add("/3", fastest), fastest)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "people@3 downloading", 10*time.Second, func() bool {
		m, _ := env.s.Get(t.Context(), "people")
		return len(m.Versions) > 0 && m.Versions[0].Version == "3" && m.Versions[0].Progress != nil && m.Versions[0].Progress.Bytes > 0
	})
	exec.Command("dd", "if=/dev/zero", "of="+fill, "bs=1M").Run() // until the disk is full
	v = waitState(t, env.s, "people", "3", StateFailed)
	if !strings.Contains(v.Error, "no space left on device") {
		t.Errorf("error %q", v.Error)
	}
	if r, _ := env.s.Resolve("people"); r.Version != "1" {
		t.Errorf("active %q, want 1", r.Version)
	}
	assertNoPartials(t, env.dir)
}

// TestCutTransferSaysSo: a transfer the server cuts, with no retry left,
// fails saying the connection broke and where (it said only "at byte N:
// unexpected EOF"), and the active version stays.
func TestCutTransferSaysSo(t *testing.T) {
	srv := newModelServer(t)
	cfg := testConfig()
	cfg.Download.Retries = 0
	env := openStore(t, srv, cfg, nil)
	yolox, fastest := modelFile(t, "yolox_nano.onnx"), modelFile(t, "fastestdet.onnx")
	if err := env.s.SetDesired(t.Context(), []Spec{spec("people", "1", srv.add("/1", yolox), yolox)}); err != nil {
		t.Fatal(err)
	}
	waitState(t, env.s, "people", "1", StateActive)
	srv.mu.Lock()
	srv.cutAt["/2"] = 300 << 10
	srv.mu.Unlock()
	if err := env.s.SetDesired(t.Context(), []Spec{spec("people", "2", srv.add("/2", fastest), fastest)}); err != nil {
		t.Fatal(err)
	}
	v := waitState(t, env.s, "people", "2", StateFailed)
	if want := fmt.Sprintf("the connection broke at byte %d of %d", 300<<10, len(fastest)); !strings.Contains(v.Error, want) {
		t.Errorf("error %q, want it to say %q", v.Error, want)
	}
	if r, _ := env.s.Resolve("people"); r.Version != "1" {
		t.Errorf("active %q, want 1", r.Version)
	}
	assertNoPartials(t, env.dir)
}

// TestActivateRefusalNamesTheFix: activating by hand a version whose
// download failed says why it failed and how to try again; an unknown
// version points at the list.
func TestActivateRefusalNamesTheFix(t *testing.T) {
	srv := newModelServer(t)
	env := openStore(t, srv, testConfig(), nil)
	fastest := modelFile(t, "fastestdet.onnx")
	sp := Spec{Name: "people", Version: "1", URL: srv.URL + "/missing.onnx", SHA256: digestOf(fastest)}
	if err := env.s.SetDesired(t.Context(), []Spec{sp}); err != nil {
		t.Fatal(err)
	}
	waitState(t, env.s, "people", "1", StateFailed)
	_, err := env.s.Activate(t.Context(), "people", "1")
	if err == nil || !strings.Contains(err.Error(), "404 Not Found") || !strings.Contains(err.Error(), "pull it again") {
		t.Errorf("activate a failed download: %v, want the reason and how to retry", err)
	}
	if _, err := env.s.Activate(t.Context(), "people", "9"); err == nil || !strings.Contains(err.Error(), "ledge models list") {
		t.Errorf("activate an unknown version: %v, want a pointer to ledge models list", err)
	}
}

// TestRetiredNameSaysWhy: a name the deployment no longer lists has no
// active version; Resolve (what a waiting pipeline shows) says so and how
// to serve one by hand.
func TestRetiredNameSaysWhy(t *testing.T) {
	srv := newModelServer(t)
	env := openStore(t, srv, testConfig(), nil)
	fastest := modelFile(t, "fastestdet.onnx")
	if err := env.s.SetDesired(t.Context(), []Spec{spec("people", "1", srv.add("/1", fastest), fastest)}); err != nil {
		t.Fatal(err)
	}
	waitState(t, env.s, "people", "1", StateActive)
	if err := env.s.SetDesired(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	_, err := env.s.Resolve("people")
	if err == nil || !strings.Contains(err.Error(), "retired: the deployment no longer lists it") || !strings.Contains(err.Error(), "ledge models activate people@1") {
		t.Errorf("resolve a retired name: %v", err)
	}
}

// TestRollbackKeepsHandChosenVersion: a name pulled and activated by hand,
// then listed by a deployment whose version fails, is as it was once the
// agent rolls back to a deployment that does not list it: its hand-chosen
// version still serves, pinned (it was retired, and pipelines that use
// the name had no model after their next start).
func TestRollbackKeepsHandChosenVersion(t *testing.T) {
	srv := newModelServer(t)
	env := openStore(t, srv, testConfig(), nil)
	yolox, fastest := modelFile(t, "yolox_nano.onnx"), modelFile(t, "fastestdet.onnx")
	if _, err := env.s.Pull(t.Context(), spec("people", "1", srv.add("/1", yolox), yolox), true); err != nil {
		t.Fatal(err)
	}
	waitState(t, env.s, "people", "1", StateActive)
	bad := spec("people", "2", srv.add("/2", fastest), fastest)
	bad.SHA256 = digestOf(yolox[:100]) // the server's bytes do not match
	if err := env.s.SetDesired(t.Context(), []Spec{bad}); err != nil {
		t.Fatal(err)
	}
	waitState(t, env.s, "people", "2", StateFailed)
	if err := env.s.SetDesired(t.Context(), nil); err != nil { // the rollback
		t.Fatal(err)
	}
	if _, err := env.s.Resolve("people"); err != nil {
		t.Errorf("after the rollback, people resolves to: %v", err)
	}
	m, err := env.s.Get(t.Context(), "people")
	if err != nil {
		t.Fatal(err)
	}
	if m.Active != "1" || !m.Pinned {
		t.Errorf("after the rollback: active %q pinned %v, want 1 pinned", m.Active, m.Pinned)
	}
}
