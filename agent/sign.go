package agent

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"ledge/agent/manifest"
	"ledge/internal/fault"
)

// Signature is a detached ed25519 signature over a manifest's exact bytes,
// as `ledge deploy sign` writes it (FILE.sig):
//
//	{"alg": "ed25519", "keyId": "3f2a...", "sig": "<base64>"}
type Signature struct {
	Alg   string `json:"alg"`
	KeyID string `json:"keyId"`
	Sig   string `json:"sig"`
}

// Envelope carries a manifest and its signature in one document, for
// sources that deliver one payload (an MQTT message, one URL):
//
//	{"manifest": "<the manifest text>", "signature": {...}}
//
// A native manifest never has a top-level "manifest" key, so the two
// cannot be confused.
type Envelope struct {
	Manifest  string     `json:"manifest"`
	Signature *Signature `json:"signature,omitempty"`
}

// TrustedKey is a public key manifests may be signed with.
type TrustedKey struct {
	ID  string
	Key ed25519.PublicKey
}

// KeyID names a public key: the first 8 bytes of its SHA-256, in hex.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// GenerateKey makes a signing key pair and returns both as PEM (private:
// PKCS#8 "PRIVATE KEY"; public: PKIX "PUBLIC KEY").
func GenerateKey() (privPEM, pubPEM []byte, id string, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, "", err
	}
	p8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, "", err
	}
	pk, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, nil, "", err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pk}), KeyID(pub), nil
}

// ParsePrivateKey reads a PEM private key written by [GenerateKey].
func ParsePrivateKey(data []byte) (ed25519.PrivateKey, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "PRIVATE KEY" {
		return nil, errors.New("not a PEM \"PRIVATE KEY\" (make one with `ledge keys gen`)")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("private key is %T, want ed25519", k)
	}
	return priv, nil
}

// Sign signs manifest with priv.
func Sign(priv ed25519.PrivateKey, manifest []byte) Signature {
	pub := priv.Public().(ed25519.PublicKey)
	return Signature{Alg: "ed25519", KeyID: KeyID(pub), Sig: base64.StdEncoding.EncodeToString(ed25519.Sign(priv, manifest))}
}

// ParseSignature reads a detached signature file.
func ParseSignature(data []byte) (*Signature, error) {
	var s Signature
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fault.New(fault.Invalid, "signature: not a ledge signature file ({\"alg\", \"keyId\", \"sig\"}): %v", err)
	}
	if s.Alg != "ed25519" {
		return nil, fault.New(fault.Invalid, "signature: algorithm %q is not supported: want ed25519", s.Alg)
	}
	return &s, nil
}

// Verify checks a signature over manifest against the trusted keys. With
// no trusted keys every manifest passes and the signer is "". The error
// says why a manifest is refused.
func Verify(trusted []TrustedKey, manifest []byte, sig *Signature) (signer string, err error) {
	if len(trusted) == 0 {
		return "", nil
	}
	if sig == nil {
		return "", fault.New(fault.Unauthorized, "manifest is not signed, and trusted keys are configured (agent.trustedKeys): sign it with `ledge deploy sign`")
	}
	raw, err := base64.StdEncoding.DecodeString(sig.Sig)
	if err != nil || len(raw) != ed25519.SignatureSize {
		return "", fault.New(fault.Unauthorized, "signature by key %s is malformed (want %d bytes of base64)", sig.KeyID, ed25519.SignatureSize)
	}
	for _, k := range trusted {
		if k.ID == sig.KeyID {
			if !ed25519.Verify(k.Key, manifest, raw) {
				return "", fault.New(fault.Unauthorized, "signature by key %s does not match the manifest: it was changed after signing, or signed as other bytes", sig.KeyID)
			}
			return k.ID, nil
		}
	}
	ids := make([]string, len(trusted))
	for i, k := range trusted {
		ids[i] = k.ID
	}
	return "", fault.New(fault.Unauthorized, "manifest is signed by key %s, which is not trusted (trusted: %s)", sig.KeyID, strings.Join(ids, ", "))
}

// ParseTrustedKeys reads agent.trustedKeys: each entry a .pub file path,
// PEM text, or base64 of the 32 raw key bytes (optionally "ed25519:...").
func ParseTrustedKeys(entries []string) ([]TrustedKey, error) {
	var out []TrustedKey
	seen := map[string]bool{}
	for i, e := range entries {
		k, err := parsePublicKey(strings.TrimSpace(e))
		if err != nil {
			return nil, fmt.Errorf("[%d]: %w", i, err)
		}
		id := KeyID(k)
		if !seen[id] {
			seen[id] = true
			out = append(out, TrustedKey{ID: id, Key: k})
		}
	}
	return out, nil
}

func parsePublicKey(s string) (ed25519.PublicKey, error) {
	switch {
	case s == "":
		return nil, errors.New("empty key")
	case strings.HasPrefix(s, "-----BEGIN"):
		return publicFromPEM([]byte(s))
	case strings.HasPrefix(s, "ed25519:"):
		return publicFromBase64(strings.TrimPrefix(s, "ed25519:"))
	}
	if k, err := publicFromBase64(s); err == nil {
		return k, nil
	}
	data, err := os.ReadFile(s)
	if err != nil {
		return nil, fmt.Errorf("%q is neither a base64 ed25519 key nor a readable key file: %w", s, err)
	}
	if k, err := publicFromPEM(data); err == nil {
		return k, nil
	}
	return publicFromBase64(strings.TrimSpace(string(data)))
}

func publicFromPEM(data []byte) (ed25519.PublicKey, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "PUBLIC KEY" {
		return nil, errors.New("not a PEM \"PUBLIC KEY\"")
	}
	k, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key is %T, want ed25519", k)
	}
	return pub, nil
}

func publicFromBase64(s string) (ed25519.PublicKey, error) {
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("not base64 of a %d-byte ed25519 public key", ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(raw), nil
}

// PublicKeyBase64 is the form of a public key for agent.trustedKeys.
func PublicKeyBase64(pubPEM []byte) (string, error) {
	k, err := publicFromPEM(pubPEM)
	if err != nil {
		return "", err
	}
	return "ed25519:" + base64.StdEncoding.EncodeToString(k), nil
}

// MaxEnvelope bounds what a source may deliver: a signed envelope carries
// the manifest (at most manifest.MaxSize) as an escaped JSON string.
const MaxEnvelope = 4 * manifest.MaxSize

// Unwrap splits a payload into manifest and signature: an [Envelope] is
// opened, anything else is a bare manifest with no signature. A payload
// over MaxEnvelope is refused before it is read.
func Unwrap(payload []byte) (data []byte, sig *Signature, err error) {
	if len(payload) > MaxEnvelope {
		return nil, nil, fault.New(fault.TooLarge, "deployment message is %d bytes, over the limit of %d (a manifest is at most %d)", len(payload), MaxEnvelope, manifest.MaxSize)
	}
	trimmed := bytes.TrimSpace(payload)
	if len(trimmed) == 0 || trimmed[0] != '{' || !bytes.Contains(trimmed, []byte(`"manifest"`)) {
		return payload, nil, nil
	}
	var probe map[string]json.RawMessage
	if json.Unmarshal(trimmed, &probe) != nil {
		return payload, nil, nil // JSONC or broken: the manifest parser explains
	}
	if _, ok := probe["manifest"]; !ok {
		return payload, nil, nil
	}
	var env Envelope
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil {
		return nil, nil, fault.New(fault.Invalid, "signed envelope: want {\"manifest\": \"<text>\", \"signature\": {...}}: %v", err)
	}
	if env.Signature != nil && env.Signature.Alg != "ed25519" {
		return nil, nil, fault.New(fault.Invalid, "signed envelope: algorithm %q is not supported: want ed25519", env.Signature.Alg)
	}
	return []byte(env.Manifest), env.Signature, nil
}
