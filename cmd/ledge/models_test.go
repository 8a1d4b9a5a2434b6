package main

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"ledge/agent"
	"ledge/internal/testenv"
	"ledge/models"
)

// TestModelsCLI drives `ledge models` against a running ledge: pull from
// a local file (with --activate --wait), list, activate by hand,
// rollback, refusals; and `ledge models sign`.
func TestModelsCLI(t *testing.T) {
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	startLedge(t, "--data-dir", dataDir)
	base := []string{"--data-dir", dataDir}
	run := func(args ...string) (string, string, int) {
		t.Helper()
		return ledge(t, append(args, base...)...)
	}
	yolox := testenv.Model(t, "yolox_nano.onnx")
	fd := testenv.Model(t, "fastestdet.onnx")

	out, errOut, code := run("models", "pull", "people@1", "--file", yolox, "--kind", "yolox", "--activate", "--wait")
	if code != 0 || !strings.Contains(out, "people@1: active") {
		t.Fatalf("pull --activate --wait: %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = run("models", "pull", "people@2", "--file", fd, "--kind", "fastestdet", "--wait")
	if code != 0 || !strings.Contains(out, "people@2: ready") {
		t.Fatalf("pull --wait: %d\n%s%s", code, out, errOut)
	}
	// The files came through the import folder, which is emptied.
	if left, _ := os.ReadDir(filepath.Join(dataDir, "import")); len(left) != 0 {
		t.Errorf("import folder after the pulls: %v", left)
	}
	out, _, code = run("models", "list")
	if code != 0 || !regexpLine(out, `people\s+1\s+active\s+3\.5 MiB\s+yolox\s+e8af074932d4`) || !regexpLine(out, `people\s+2\s+ready\s+1005\.6 KiB\s+fastestdet`) {
		t.Fatalf("list:\n%s", out)
	}
	if out, errOut, code = run("models", "activate", "people@2"); code != 0 || !strings.Contains(out, "people@2: active") {
		t.Fatalf("activate: %d %s %s", code, out, errOut)
	}
	if out, errOut, code = run("models", "rollback", "people"); code != 0 || !strings.Contains(out, "people@1: active") {
		t.Fatalf("rollback: %d %s %s", code, out, errOut)
	}
	out, _, _ = run("models", "list", "--json")
	var ms []models.Model
	if err := json.Unmarshal([]byte(out), &ms); err != nil || len(ms) != 1 || ms[0].Active != "1" || !ms[0].Pinned || len(ms[0].Versions) != 2 {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	// Without --kind, ledge tells the family from the model's shapes: the
	// list says auto, as the Models page does (not "-").
	if out, errOut, code = run("models", "pull", "plain@1", "--file", fd, "--wait"); code != 0 || !strings.Contains(out, "plain@1: ready") {
		t.Fatalf("pull without --kind: %d %s %s", code, out, errOut)
	}
	if out, _, _ = run("models", "list"); !regexpLine(out, `plain\s+1\s+ready\s+1005\.6 KiB\s+auto\s+`) {
		t.Errorf("list, a model without a kind:\n%s", out)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"models", "pull", "people@3", "--url", "file://" + fd, "--sha256", "abc"}, "sha256"},
		{[]string{"models", "pull", "people@3", "--url", "ftp://h/m.onnx", "--sha256", strings.Repeat("a", 64)}, "scheme"},
		{[]string{"models", "pull", "people@2", "--file", yolox}, "never changes"},
		{[]string{"models", "activate", "people@9"}, "no version 9"},
		{[]string{"models", "activate", "../x@1"}, "starts with a letter"},
		{[]string{"models", "rollback", "nobody"}, "never active"},
	} {
		_, errOut, code := run(tc.args...)
		if code == 0 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: %d %q, want an error with %q", tc.args, code, errOut, tc.want)
		}
	}
	if _, _, code := ledge(t, "models", "pull", "people@3"); code != 2 {
		t.Errorf("pull without --url or --file: exit %d, want 2 (usage)", code)
	}

	// sign: the signature is over the digest's hex digits.
	if _, errOut, code := ledge(t, "keys", "gen", "--out", filepath.Join(dir, "k")); code != 0 {
		t.Fatal(errOut)
	}
	out, errOut, code = ledge(t, "models", "sign", "--key", filepath.Join(dir, "k.key"), "--json", fd)
	if code != 0 {
		t.Fatal(errOut)
	}
	var signed struct {
		SHA256    string          `json:"sha256"`
		Size      int64           `json:"size"`
		Signature agent.Signature `json:"signature"`
	}
	if err := json.Unmarshal([]byte(out), &signed); err != nil {
		t.Fatal(err)
	}
	pubPEM, _ := os.ReadFile(filepath.Join(dir, "k.pub"))
	keys, err := agent.ParseTrustedKeys([]string{string(pubPEM)})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(signed.Signature.Sig)
	if signed.SHA256 != "ff3f62a1c86db3c144b969dd3085502311f86363c7ac920e54606ee9f3135b0f" || signed.Size != 1029727 ||
		signed.Signature.KeyID != keys[0].ID || !ed25519.Verify(keys[0].Key, []byte(signed.SHA256), raw) {
		t.Errorf("sign output does not verify: %s", out)
	}
}

// regexpLine reports whether a line of out matches re.
func regexpLine(out, re string) bool {
	r := regexp.MustCompile(re)
	for _, l := range strings.Split(out, "\n") {
		if r.MatchString(l) {
			return true
		}
	}
	return false
}

// TestModelsPullStoredFileAgain: a file whose digest the store has is
// stored at once under the new version: pull --wait says so once, and the
// copy handed over through the import folder is removed as for any pull.
func TestModelsPullStoredFileAgain(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	startLedge(t, "--data-dir", dataDir)
	fd := testenv.Model(t, "fastestdet.onnx")
	for _, v := range []string{"1", "2"} {
		out, errOut, code := ledge(t, "models", "pull", "cars@"+v, "--file", fd, "--kind", "fastestdet", "--wait", "--data-dir", dataDir)
		if lines := strings.Split(strings.TrimSpace(out), "\n"); code != 0 || len(lines) > 1 && lines[1] == lines[0] {
			t.Errorf("pull cars@%s --wait: exit %d, a state said twice?\n%s%s", v, code, out, errOut)
		}
	}
	waitFor(t, 10*time.Second, "the import folder emptied", func() bool {
		left, _ := os.ReadDir(filepath.Join(dataDir, "import"))
		return len(left) == 0
	})
}
