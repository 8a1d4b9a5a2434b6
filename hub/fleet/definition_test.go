package fleet

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// edKeys signs and verifies with one ed25519 key: the shape of what
// cmd/ledge wires from the agent.
type edKeys struct{ priv ed25519.PrivateKey }

func (k edKeys) Sign(data []byte) (json.RawMessage, error) {
	return json.Marshal(map[string]string{"alg": "ed25519", "sig": base64.StdEncoding.EncodeToString(ed25519.Sign(k.priv, data))})
}

func (k edKeys) Verify(data []byte, sig json.RawMessage) (string, error) {
	var s struct{ Sig string }
	if err := json.Unmarshal(sig, &s); err != nil {
		return "", err
	}
	raw, _ := base64.StdEncoding.DecodeString(s.Sig)
	if !ed25519.Verify(k.priv.Public().(ed25519.PublicKey), data, raw) {
		return "", errors.New("signature does not match")
	}
	return "k1", nil
}

func testKeys() edKeys {
	return edKeys{ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))}
}

func TestSealOpen(t *testing.T) {
	k := testKeys()
	d := &Definition{Name: "people", Generation: 1, Target: "tags.site = 'berlin'", Priority: 10,
		Rollout: Policy{Waves: []string{"1", "50%", "100%"}, AbortAfter: "5%"}, State: StateActive, Manifest: "version: \"1\"\n"}
	payload, err := Seal(d, k)
	if err != nil {
		t.Fatal(err)
	}
	got, signer, err := Open(payload, k, "people")
	if err != nil || signer != "k1" || got.Target != d.Target || !got.Matches([]byte(`{"tags":{"site":"berlin"}}`)) {
		t.Fatalf("Open: %+v %s %v", got, signer, err)
	}
	if _, _, err := Open(payload, k, "other"); err == nil || !strings.Contains(err.Error(), "retained under the name") {
		t.Errorf("a definition under another name: %v", err)
	}
	tampered := strings.Replace(string(payload), "berlin", "paris", 1)
	if _, _, err := Open([]byte(tampered), k, "people"); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("a changed target passed: %v", err)
	}
	for field, mutate := range map[string]func(*Definition){
		"target":             func(d *Definition) { d.Target = "tags.site = " },
		"rollout.waves[1]":   func(d *Definition) { d.Rollout.Waves = []string{"10", "5%"} },
		"priority":           func(d *Definition) { d.Priority = -1 },
		"name":               func(d *Definition) { d.Name = "a/b" },
		"state":              func(d *Definition) { d.State = "on" },
		"rollout.abortAfter": func(d *Definition) { d.Rollout.AbortAfter = "x" },
	} {
		bad := *d
		mutate(&bad)
		if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: %v", field, err)
		}
	}
}

// TestTombstone: a deleted deployment's tombstone carries its name and
// generation alone, seals and opens, and matches no device.
func TestTombstone(t *testing.T) {
	k := testKeys()
	payload, err := Seal(Tombstone("people", 4, time.Unix(1700000000, 0).UTC()), k)
	if err != nil {
		t.Fatal(err)
	}
	var env Signed
	json.Unmarshal(payload, &env)
	if env.Definition != `{"name":"people","generation":4,"created":"2023-11-14T22:13:20Z","state":"deleted"}` {
		t.Errorf("tombstone: %s", env.Definition)
	}
	d, _, err := Open(payload, k, "people")
	if err != nil || d.State != StateDeleted || d.Generation != 4 || d.Matches([]byte(`{"tags":{}}`)) {
		t.Fatalf("Open a tombstone: %+v %v", d, err)
	}
	if err := Tombstone("people", 0, time.Time{}).Validate(); err == nil || !strings.Contains(err.Error(), "generation") {
		t.Errorf("a tombstone of generation 0: %v", err)
	}
}

func TestWaveSizes(t *testing.T) {
	p := Policy{Waves: []string{"1", "50%", "100%"}}
	for _, tc := range []struct{ wave, total, want int }{{0, 12, 1}, {1, 12, 6}, {2, 12, 12}, {1, 3, 2}, {0, 0, 0}, {1, 1000, 500}} {
		if got := p.WaveTarget(tc.wave, tc.total); got != tc.want {
			t.Errorf("wave %d of %d: %d, want %d", tc.wave, tc.total, got, tc.want)
		}
	}
	if w, err := ParseWaves("1,10%"); err != nil || strings.Join(w, ",") != "1,10%,100%" {
		t.Errorf("ParseWaves: %v %v", w, err)
	}
	if a := (Policy{AbortAfter: "5%"}); !a.Aborts(1, 1) || a.Aborts(1, 100) || !a.Aborts(5, 100) {
		t.Error("abortAfter 5%")
	}
	if a := (Policy{AbortAfter: "2"}); a.Aborts(1, 1) || !a.Aborts(2, 10) {
		t.Error("abortAfter 2")
	}
}

func FuzzOpen(f *testing.F) {
	k := testKeys()
	d := &Definition{Name: "people", Generation: 1, Target: "tags.site = 'berlin'", Rollout: Policy{Waves: []string{"100%"}}, State: StateActive, Manifest: "m"}
	good, _ := Seal(d, k)
	f.Add(good)
	tomb, _ := Seal(Tombstone("people", 2, time.Unix(1700000000, 0)), k)
	f.Add(tomb)
	f.Add([]byte(`{"definition":"{}","signature":{}}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		d, _, err := Open(payload, k, "")
		if err == nil && d.Validate() != nil {
			t.Fatal("Open returned an invalid definition")
		}
	})
}
