package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
	bin := testenv.Command(t, "docker-registry", "docker-registry")
	htpasswd := testenv.Command(t, "htpasswd", "apache2-utils")
	dir := t.TempDir()
	addr := freePort(t)
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ledge test registry CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafDER, _ := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}, ca, &key.PublicKey, caKey)
	keyDER, _ := x509.MarshalECPrivateKey(key)
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644)
	os.WriteFile(filepath.Join(dir, "cert.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}), 0o644)
	os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	pw, err := exec.Command(htpasswd, "-Bbn", "ledge", "pw-push").Output()
	if err != nil {
		t.Fatalf("htpasswd: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "htpasswd"), pw, 0o600)
	os.WriteFile(filepath.Join(dir, "config.yml"), fmt.Appendf(nil, `version: 0.1
log: {level: error}
storage:
  filesystem: {rootdirectory: %s}
http:
  addr: "%s"
  tls: {certificate: %s, key: %s}
auth:
  htpasswd: {realm: ledge-test, path: %s}
`, filepath.Join(dir, "data"), addr, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "htpasswd")), 0o600)
	reg := exec.Command(bin, "serve", filepath.Join(dir, "config.yml"))
	var regOut bytes.Buffer
	reg.Stdout, reg.Stderr = &regOut, &regOut
	if err := reg.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Process.Kill(); reg.Wait() })
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	tlsConf := &tls.Config{RootCAs: pool}
	waitFor(t, 10*time.Second, "registry listening", func() bool {
		c, err := tls.Dial("tcp", addr, tlsConf)
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	if _, errOut, code := ledge(t, "keys", "gen", "--out", filepath.Join(dir, "k")); code != 0 {
		t.Fatal(errOut)
	}
	fd := testenv.Model(t, "fastestdet.onnx")
	sum, _, err := fileDigest(fd)
	if err != nil {
		t.Fatal(err)
	}
	tag := "oci://" + addr + "/ledge-test/people:1"
	env := []string{"SSL_CERT_FILE=" + caFile, "LEDGE_REGISTRY_USERNAME=ledge", "LEDGE_REGISTRY_PASSWORD=pw-push"}

	// Wrong credentials: refused, saying so.
	_, errOut, code := ledgeIn(t, "", []string{"SSL_CERT_FILE=" + caFile, "LEDGE_REGISTRY_USERNAME=ledge", "LEDGE_REGISTRY_PASSWORD=wrong"},
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
	cli := models.OCIClient{TLS: tlsConf, Username: "ledge", Password: "pw-push"}
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
