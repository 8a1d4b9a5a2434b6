package hub

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"
)

// certs owns <dataDir>/hub/{ca,server}.{pem,key}: a CA made on first start
// (valid 20 years) and a server certificate it signs for the hub's names
// and addresses, renewed before it expires and whenever the names change.
type certs struct {
	dir      string
	names    []string // DNS names and IPs the server certificate must carry
	validity time.Duration
	renew    time.Duration

	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caPool *x509.CertPool
	server atomic.Pointer[tls.Certificate]
}

const caValidity = 20 * 365 * 24 * time.Hour

func loadCerts(dir string, names []string, validity, renew time.Duration) (*certs, error) {
	c := &certs{dir: dir, names: dedupe(names), validity: validity, renew: renew}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cert dir: %w", err)
	}
	if err := c.loadOrMakeCA(); err != nil {
		return nil, err
	}
	if err := c.ensureServer(time.Now()); err != nil {
		return nil, err
	}
	return c, nil
}

func dedupe(names []string) []string {
	var out []string
	for _, n := range names {
		if n != "" && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// CAPath is the CA certificate clients trust.
func (c *certs) CAPath() string { return filepath.Join(c.dir, "ca.pem") }

func (c *certs) loadOrMakeCA() error {
	certPEM, err1 := os.ReadFile(filepath.Join(c.dir, "ca.pem"))
	keyPEM, err2 := os.ReadFile(filepath.Join(c.dir, "ca.key"))
	if err1 == nil && err2 == nil {
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return fmt.Errorf("hub CA in %s: %w", c.dir, err)
		}
		c.ca, err = x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			return fmt.Errorf("hub CA: %w", err)
		}
		key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
		if !ok {
			return errors.New("hub CA key is not ECDSA")
		}
		c.caKey = key
	} else {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		now := time.Now()
		tmpl := &x509.Certificate{
			SerialNumber:          serial(),
			Subject:               pkix.Name{CommonName: "ledge hub CA", Organization: []string{"ledge"}},
			NotBefore:             now.Add(-time.Hour),
			NotAfter:              now.Add(caValidity),
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
			BasicConstraintsValid: true,
			IsCA:                  true,
			MaxPathLenZero:        true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			return fmt.Errorf("make hub CA: %w", err)
		}
		if err := writePair(c.dir, "ca", der, key); err != nil {
			return err
		}
		c.ca, _ = x509.ParseCertificate(der)
		c.caKey = key
	}
	c.caPool = x509.NewCertPool()
	c.caPool.AddCert(c.ca)
	return nil
}

// ensureServer loads the server certificate, or makes a new one when it is
// missing, expires within the renewal window, or lacks one of the names.
func (c *certs) ensureServer(now time.Time) error {
	certPEM, err1 := os.ReadFile(filepath.Join(c.dir, "server.pem"))
	keyPEM, err2 := os.ReadFile(filepath.Join(c.dir, "server.key"))
	if err1 == nil && err2 == nil {
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err == nil {
			leaf, err := x509.ParseCertificate(pair.Certificate[0])
			if err == nil && now.Add(c.renew).Before(leaf.NotAfter) && c.covers(leaf) && leaf.CheckSignatureFrom(c.ca) == nil {
				pair.Leaf = leaf
				c.server.Store(&pair)
				return nil
			}
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: c.names[0], Organization: []string{"ledge"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(c.validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range c.names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.ca, &key.PublicKey, c.caKey)
	if err != nil {
		return fmt.Errorf("make hub server certificate: %w", err)
	}
	if err := writePair(c.dir, "server", der, key); err != nil {
		return err
	}
	leaf, _ := x509.ParseCertificate(der)
	c.server.Store(&tls.Certificate{Certificate: [][]byte{der, c.ca.Raw}, PrivateKey: key, Leaf: leaf})
	return nil
}

func (c *certs) covers(leaf *x509.Certificate) bool {
	for _, n := range c.names {
		if leaf.VerifyHostname(n) != nil {
			return false
		}
	}
	return true
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}

func writePair(dir, name string, der []byte, key *ecdsa.PrivateKey) error {
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	var cert, k bytes.Buffer
	pem.Encode(&cert, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	pem.Encode(&k, &pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	// Key first, then certificate, each replaced atomically.
	if err := writeAtomic(filepath.Join(dir, name+".key"), k.Bytes(), 0o600); err != nil {
		return err
	}
	return writeAtomic(filepath.Join(dir, name+".pem"), cert.Bytes(), 0o644)
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// tlsConfig serves the current server certificate and asks for (but does
// not require) client certificates, which the auth hook checks.
func (c *certs) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.server.Load(), nil },
		ClientAuth:     tls.RequestClientCert,
	}
}

// machineNames are the hostname (and, when it has no domain, its mDNS
// name <host>.local, what a LAN reaches a Pi by) and the addresses of
// this machine.
func machineNames() []string {
	names := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil && h != "" {
		names = append(names, h)
		if !strings.Contains(h, ".") {
			names = append(names, h+".local")
		}
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLinkLocalUnicast() {
				names = append(names, ipn.IP.String())
			}
		}
	}
	return names
}

// webTLSConfig serves the hub's current server certificate to HTTPS
// clients (the dashboard on 8443); it follows renewals.
func (c *certs) webTLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.server.Load(), nil },
	}
}
