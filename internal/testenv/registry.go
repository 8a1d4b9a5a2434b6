package testenv

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Registry is Debian's docker-registry serving on a free loopback port
// with TLS (a CA made here) and htpasswd, until the test ends.
type Registry struct {
	Addr, User, Password string
	CAFile               string      // the CA's certificate (PEM)
	TLS                  *tls.Config // trusts the CA
	Root                 string      // the registry's storage directory
}

// OCIRegistry starts a Registry.
func OCIRegistry(t testing.TB) *Registry {
	t.Helper()
	bin := Command(t, "docker-registry", "docker-registry")
	htpasswd := Command(t, "htpasswd", "apache2-utils")
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Registry{Addr: l.Addr().String(), User: "ledge", Password: "pw-oci", Root: filepath.Join(dir, "data")}
	l.Close()
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
	r.CAFile = filepath.Join(dir, "ca.pem")
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	write("cert.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}))
	write("key.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	r.TLS = &tls.Config{RootCAs: pool}
	out, err := exec.Command(htpasswd, "-Bbn", r.User, r.Password).Output()
	if err != nil {
		t.Fatalf("testenv: htpasswd: %v", err)
	}
	write("htpasswd", out)
	write("config.yml", fmt.Appendf(nil, `version: 0.1
log: {level: error}
storage:
  filesystem: {rootdirectory: %s}
http:
  addr: "%s"
  tls: {certificate: %s, key: %s}
auth:
  htpasswd: {realm: ledge-test, path: %s}
`, r.Root, r.Addr, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "htpasswd")))
	cmd := exec.Command(bin, "serve", filepath.Join(dir, "config.yml"))
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second * Slowdown())
	for {
		c, err := tls.Dial("tcp", r.Addr, r.TLS)
		if err == nil {
			c.Close()
			return r
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait() // stderr is complete
			t.Fatalf("testenv: docker-registry not listening on %s: %v\n%s", r.Addr, err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
