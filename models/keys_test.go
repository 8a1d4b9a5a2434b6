package models

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"testing"
)

func newKey(t *testing.T) (TrustedKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(pub)
	return TrustedKey{ID: hex.EncodeToString(sum[:8]), Key: pub}, priv
}

func signDigest(priv ed25519.PrivateKey, digest, keyID string) *Signature {
	return &Signature{KeyID: keyID, Sig: base64.StdEncoding.EncodeToString(ed25519.Sign(priv, []byte(digest)))}
}
