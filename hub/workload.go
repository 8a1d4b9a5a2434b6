package hub

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
	"time"

	"ledge/internal/fault"
)

// What the agent's workload API asks of the hub (reference §5.2): it
// signs with a module's key, hands out the CA, and issues server
// certificates, so Azure SDK modules work without their key.

// maxModuleCertValidity bounds a module's server certificate.
const maxModuleCertValidity = 90 * 24 * time.Hour

// generationID is a module identity's generation id: the identity made
// again (removed, then added) has another.
func generationID(id *Identity) string { return fmt.Sprint(id.Created.Unix()) }

// ModuleSign returns HMAC-SHA256 of data under the primary key of module
// (of this device), when genID is its identity's generation id.
func (h *Hub) ModuleSign(_ context.Context, module, genID string, data []byte) ([]byte, error) {
	id := h.ids.get(h.deviceID + "/" + module)
	if id == nil || id.Kind != KindModule {
		return nil, fault.New(fault.NotFound, "module %q has no identity on this hub", module)
	}
	if gen := generationID(id); gen != genID {
		return nil, fault.New(fault.Forbidden, "generation id %q is not that of module %q's identity (%s): it was made again; restart the module", genID, module, gen)
	}
	if len(id.primary) == 0 {
		return nil, fault.New(fault.Invalid, "module %q has no symmetric key", module)
	}
	m := hmac.New(sha256.New, id.primary)
	m.Write(data)
	return m.Sum(nil), nil
}

// TrustBundle is the hub's CA certificate (PEM), which modules trust.
func (h *Hub) TrustBundle() ([]byte, error) {
	return os.ReadFile(h.certs.CAPath())
}

// ModuleServerCertificate issues a TLS server certificate for commonName
// (a module's name on the module network), signed by the hub's CA, valid
// until notAfter but at most 90 days: the chain (leaf then CA), the
// private key (PKCS #8) and the expiry, in PEM.
func (h *Hub) ModuleServerCertificate(_ context.Context, module, commonName string, notAfter time.Time) (chain, key []byte, expires time.Time, err error) {
	if h.ids.get(h.deviceID+"/"+module) == nil {
		return nil, nil, time.Time{}, fault.New(fault.NotFound, "module %q has no identity on this hub", module)
	}
	// A name of the hub's own (localhost, the host, the device id): a
	// module with that certificate would pass for the hub with everyone
	// who trusts its CA.
	for _, n := range h.certs.names {
		if strings.EqualFold(n, commonName) {
			return nil, nil, time.Time{}, fault.New(fault.Forbidden, "commonName %q is one of the hub's own names (its server certificate carries it): no module may have a certificate for it; give module %q another name", commonName, module)
		}
	}
	now := time.Now()
	if max := now.Add(maxModuleCertValidity); notAfter.After(max) {
		notAfter = max
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: commonName, Organization: []string{"ledge module " + module}},
		DNSNames:     []string{commonName},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, h.certs.ca, &k.PublicKey, h.certs.caKey)
	if err != nil {
		return nil, nil, time.Time{}, fmt.Errorf("module certificate: %w", err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	chain = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: h.certs.ca.Raw})...)
	return chain, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}), notAfter, nil
}
