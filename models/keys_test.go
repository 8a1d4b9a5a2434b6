package models

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
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

// TestDialControl: after a redirect from the outside, a direct connection
// to loopback or link-local is refused at connect time (a name that
// resolved elsewhere when the redirect was checked does not get through).
func TestDialControl(t *testing.T) {
	outside := context.WithValue(t.Context(), redirectKey{}, redirectPolicy{direct: true})
	inside := context.WithValue(t.Context(), redirectKey{}, redirectPolicy{direct: true, internalOK: true})
	proxied := context.WithValue(t.Context(), redirectKey{}, redirectPolicy{})
	for _, tc := range []struct {
		ctx  context.Context
		addr string
		bad  bool
	}{
		{outside, "127.0.0.1:80", true},
		{outside, "[::1]:80", true},
		{outside, "169.254.169.254:80", true},
		{outside, "[fe80::1]:80", true},
		{outside, "0.0.0.0:80", true},
		{outside, "[::ffff:127.0.0.1]:80", true},
		{outside, "[fd00:ec2::254]:80", true},
		{outside, "100.100.100.200:80", true},
		{outside, "100.100.100.201:443", false},
		{outside, "[fd00:ec2::253]:443", false},
		{outside, "192.0.2.1:443", false},
		{outside, "10.0.0.1:443", false},
		{inside, "127.0.0.1:80", false},
		{proxied, "127.0.0.1:3128", false},
	} {
		err := dialControl(tc.ctx, "tcp", tc.addr, nil)
		if (err != nil) != tc.bad || err != nil && !errors.Is(err, errInternalDial) {
			t.Errorf("%s: %v, want refused %v", tc.addr, err, tc.bad)
		}
	}
}
