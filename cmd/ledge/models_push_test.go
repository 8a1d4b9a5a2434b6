package main

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ledge/agent"
	"ledge/internal/testenv"
	"ledge/models"
)

// TestModelsPushCLI: `ledge models push` (docs/models.md) publishes a
// model to a registry (Debian's docker-registry, TLS with a CA made here,
// htpasswd) as an OCI artifact, with its labels, kind and ed25519
// signature as annotations, and prints the reference pinned to the
// manifest's digest: what the tag resolves to, and what a models
// section names. The appliance tests push with models.PushOCI; this is
// the command, its flags and its registry credentials.
func TestModelsPushCLI(t *testing.T) {
	reg := testenv.OCIRegistry(t)
	dir := t.TempDir()
	addr, caFile := reg.Addr, reg.CAFile

	if _, errOut, code := ledge(t, "keys", "gen", "--out", filepath.Join(dir, "k")); code != 0 {
		t.Fatal(errOut)
	}
	fd := testenv.Model(t, "fastestdet.onnx")
	sum, _, err := fileDigest(fd)
	if err != nil {
		t.Fatal(err)
	}
	tag := "oci://" + addr + "/ledge-test/people:1"
	env := []string{"SSL_CERT_FILE=" + caFile, "LEDGE_REGISTRY_USERNAME=" + reg.User, "LEDGE_REGISTRY_PASSWORD=" + reg.Password}

	// Wrong credentials: refused, saying so.
	_, errOut, code := ledgeIn(t, "", []string{"SSL_CERT_FILE=" + caFile, "LEDGE_REGISTRY_USERNAME=" + reg.User, "LEDGE_REGISTRY_PASSWORD=wrong"},
		"models", "push", fd, tag)
	if code == 0 {
		t.Fatalf("push with a wrong password: exit 0\n%s", errOut)
	}

	out, errOut, code := ledgeIn(t, "", env, "models", "push", fd, tag, "--labels", "person,car", "--kind", "fastestdet",
		"--key", filepath.Join(dir, "k.key"), "--json")
	if code != 0 {
		t.Fatalf("models push: exit %d\n%s%s", code, out, errOut)
	}
	var res struct{ Reference, Tag, SHA256 string }
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("models push --json: %v\n%s", err, out)
	}
	pinned, err := models.ParseOCIRef(res.Reference)
	if err != nil || !strings.HasPrefix(pinned.Reference, "sha256:") || res.Tag != tag || res.SHA256 != sum {
		t.Fatalf("models push --json: %+v (%v), want a reference @sha256:, the tag %s and the file's sha256 %s", res, err, tag, sum)
	}

	// The tag resolves to the printed digest; the annotations are there
	// and the signature verifies with the key's public part.
	tagRef, _ := models.ParseOCIRef(tag)
	cli := models.OCIClient{TLS: reg.TLS, Username: reg.User, Password: reg.Password}
	m, err := cli.Resolve(t.Context(), tagRef)
	if err != nil {
		t.Fatal(err)
	}
	if m.Ref != pinned || m.SHA256 != sum || strings.Join(m.Labels, ",") != "person,car" || m.Kind != "fastestdet" {
		t.Errorf("resolved %s: %+v, want %s, sha256 %s, labels person,car, kind fastestdet", tag, m, pinned, sum)
	}
	pubPEM, _ := os.ReadFile(filepath.Join(dir, "k.pub"))
	keys, err := agent.ParseTrustedKeys([]string{string(pubPEM)})
	if err != nil {
		t.Fatal(err)
	}
	sig, _ := base64.StdEncoding.DecodeString(m.Signature)
	if m.KeyID != keys[0].ID || !ed25519.Verify(keys[0].Key, []byte(sum), sig) {
		t.Errorf("the artifact's signature (key %q) does not verify with %s", m.KeyID, keys[0].ID)
	}

	// Without --json: the pinned reference on stdout, what to put in a
	// models section on stderr.
	// (No labels, kind or key this time: another manifest, another
	// digest, which the tag now names.)
	out, errOut, code = ledgeIn(t, "", env, "models", "push", fd, tag)
	again, err := models.ParseOCIRef(strings.TrimSpace(out))
	if code != 0 || err != nil || !strings.HasPrefix(again.Reference, "sha256:") || again == pinned ||
		!strings.Contains(errOut, "url: "+again.String()) || !strings.Contains(errOut, "sha256: "+sum) {
		t.Errorf("models push: exit %d\n%s%s\nwant a new pinned reference on stdout and the models section on stderr", code, out, errOut)
	}
	if m, err := cli.Resolve(t.Context(), tagRef); err != nil || m.Ref != again || m.Signature != "" || len(m.Labels) != 0 {
		t.Errorf("after the second push %s resolves to %+v (%v), want %s, unsigned, no labels", tag, m, err, again)
	}
}
