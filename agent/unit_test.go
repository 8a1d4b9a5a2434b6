package agent

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ledge/agent/manifest"
	"ledge/internal/fault"
	"ledge/internal/testenv"
)

func TestSignVerify(t *testing.T) {
	privPEM, pubPEM, id, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	priv, err := ParsePrivateKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	pubB64, _ := PublicKeyBase64(pubPEM)
	dir := t.TempDir()
	pubFile := filepath.Join(dir, "k.pub")
	os.WriteFile(pubFile, pubPEM, 0o644)
	// The same key given three ways is trusted once.
	trusted, err := ParseTrustedKeys([]string{pubFile, pubB64, string(pubPEM), strings.TrimPrefix(pubB64, "ed25519:")})
	if err != nil || len(trusted) != 1 || trusted[0].ID != id {
		t.Fatalf("trusted %v, %v", trusted, err)
	}
	_, otherPEM, _, _ := GenerateKey()
	other, _ := ParseTrustedKeys([]string{string(otherPEM)})

	m := []byte("version: '1'\n")
	sig := Sign(priv, m)
	if signer, err := Verify(trusted, m, &sig); err != nil || signer != id {
		t.Errorf("good signature: %q, %v", signer, err)
	}
	for name, tc := range map[string]struct {
		trusted []TrustedKey
		data    []byte
		sig     *Signature
		want    string
	}{
		"tampered":  {trusted, []byte("version: '2'\n"), &sig, "does not match the manifest"},
		"unsigned":  {trusted, m, nil, "not signed"},
		"other key": {other, m, &sig, "not trusted"},
		"malformed": {trusted, m, &Signature{Alg: "ed25519", KeyID: id, Sig: "!!"}, "malformed"},
	} {
		_, err := Verify(tc.trusted, tc.data, tc.sig)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !fault.Is(err, fault.Unauthorized) {
			t.Errorf("%s: %v, want %q (unauthorized)", name, err, tc.want)
		}
	}
	if signer, err := Verify(nil, m, nil); err != nil || signer != "" {
		t.Errorf("no trusted keys: %q %v", signer, err)
	}
	for _, bad := range []string{"", "ed25519:AAAA", "/no/such/file", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"} {
		if _, err := ParseTrustedKeys([]string{bad}); err == nil {
			t.Errorf("trusted key %q accepted", bad)
		}
	}
	if _, err := ParsePrivateKey(pubPEM); err == nil {
		t.Error("a public key parsed as private")
	}
}

func TestUnwrap(t *testing.T) {
	privPEM, _, _, _ := GenerateKey()
	priv, _ := ParsePrivateKey(privPEM)
	s := Sign(priv, []byte("version: '1'\n"))
	env, _ := json.Marshal(Envelope{Manifest: "version: '1'\n", Signature: &s})
	m, sig, err := Unwrap(env)
	if err != nil || string(m) != "version: '1'\n" || sig == nil || sig.Sig != s.Sig {
		t.Fatalf("envelope: %q %+v %v", m, sig, err)
	}
	for _, plain := range []string{"version: '1'\n", `{"version": "1"}`, `{"version": "1", // c` + "\n}", `{"modulesContent": {"manifest": 1}}`} {
		m, sig, err := Unwrap([]byte(plain))
		if err != nil || string(m) != plain || sig != nil {
			t.Errorf("%q: %q %+v %v", plain, m, sig, err)
		}
	}
	if _, _, err := Unwrap([]byte(`{"manifest": "x", "signatures": []}`)); err == nil {
		t.Error("envelope with an unknown key accepted")
	}
}

func FuzzUnwrap(f *testing.F) {
	f.Add([]byte(`{"manifest": "version: 1", "signature": {"alg": "ed25519", "keyId": "ab", "sig": "AA=="}}`))
	f.Add([]byte("version: 1\n"))
	f.Add([]byte(`{"manifest": 5}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, sig, err := Unwrap(data)
		if err != nil {
			if !fault.Is(err, fault.Invalid) {
				t.Fatalf("error without the invalid kind: %v", err)
			}
			return
		}
		if string(m) != string(data) {
			var env Envelope
			if json.Unmarshal(data, &env) != nil || env.Manifest != string(m) {
				t.Fatalf("payload changed, and it was not an envelope of %q", m)
			}
		}
		if sig != nil && sig.Alg != "ed25519" {
			t.Fatalf("accepted algorithm %q", sig.Alg)
		}
	})
}

func FuzzParseSignature(f *testing.F) {
	f.Add([]byte(`{"alg": "ed25519", "keyId": "ab", "sig": "AA=="}`))
	f.Add([]byte(`{"alg": "rsa"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSignature(data)
		if err != nil {
			return
		}
		trusted, _ := ParseTrustedKeys([]string{"ed25519:" + strings.Repeat("A", 43) + "="})
		if _, err := Verify(trusted, data, s); err == nil {
			t.Fatalf("a fuzzed signature verified")
		}
	})
}

func TestStoreRollbackChain(t *testing.T) {
	ctx := t.Context()
	st, err := openStore(ctx, testenv.DB(t))
	if err != nil {
		t.Fatal(err)
	}
	add := func(v string) *Deployment {
		d := &Deployment{Version: v, Digest: v, Source: SourceAPI, Format: "yaml", Manifest: []byte(v), ReceivedAt: time.Now()}
		if err := st.insertCurrent(ctx, d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	d1 := add("1")
	st.setOutcome(ctx, d1.ID, StateConverged, "", time.Now())
	d2 := add("2")
	st.setOutcome(ctx, d2.ID, StateConverged, "", time.Now())
	d3 := add("3") // fails
	if g, _ := st.lastGoodBefore(ctx, d3.ID); g == nil || g.ID != d2.ID {
		t.Fatalf("last good before 3: %+v", g)
	}
	if err := st.makeCurrent(ctx, d2.ID, StateRolledBack, "crash loop"); err != nil {
		t.Fatal(err)
	}
	cur, _ := st.current(ctx)
	if cur.ID != d2.ID {
		t.Fatalf("current %d, want %d", cur.ID, d2.ID)
	}
	if g, _ := st.lastGoodBefore(ctx, d2.ID); g == nil || g.ID != d1.ID {
		t.Fatalf("last good before 2: %+v", g)
	}
	got3, _ := st.get(ctx, d3.ID)
	if got3.State != StateRolledBack || got3.Reason != "crash loop" {
		t.Errorf("deployment 3: %+v", got3)
	}
	d4 := add("4")
	if d4.PrevID != d2.ID {
		t.Errorf("deployment 4 follows %d, want %d", d4.PrevID, d2.ID)
	}
	for i := 5; i < 30; i++ {
		add(string(rune('a' + i)))
	}
	if err := st.prune(ctx, 5); err != nil {
		t.Fatal(err)
	}
	// The newest five stay, and so does deployment 2, the one the current
	// would roll back to.
	h, _ := st.history(ctx, 100)
	if len(h) != 6 || h[5].ID != d2.ID {
		t.Errorf("after prune: %d deployments (oldest %d), want 6 ending with %d", len(h), h[len(h)-1].ID, d2.ID)
	}
}

func TestSpecHash(t *testing.T) {
	parse := func(doc string) *manifest.Module {
		m, err := manifest.Parse([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		return &m.Modules[0]
	}
	in := injection{instance: "i", prefix: "p-", deviceID: "d", network: "ledge", gateway: "10.0.0.1", logging: DefaultConfig().ModuleLogging}
	hash := func(doc string, in injection) string {
		s, err := buildSpec(parse(doc), in)
		if err != nil {
			t.Fatal(err)
		}
		return s.Hash
	}
	base := "version: '1'\nmodules:\n  m: {image: a:1, env: {A: '1'}, createOptions: {Env: [B=2], HostConfig: {Privileged: true}}}\n"
	h0 := hash(base, in)
	if h0 != hash(base, in) {
		t.Fatal("hash is not stable")
	}
	for name, doc := range map[string]string{
		"image":         strings.Replace(base, "a:1", "a:2", 1),
		"env":           strings.Replace(base, "A: '1'", "A: '2'", 1),
		"createOptions": strings.Replace(base, "Privileged: true", "Privileged: false", 1),
	} {
		if hash(doc, in) == h0 {
			t.Errorf("changing %s keeps the hash", name)
		}
	}
	for name, doc := range map[string]string{
		"restart policy": strings.Replace(base, "image: a:1", "image: a:1, restartPolicy: never", 1),
		"startup order":  strings.Replace(base, "image: a:1", "image: a:1, startupOrder: 3", 1),
		"status":         strings.Replace(base, "image: a:1", "image: a:1, status: stopped", 1),
	} {
		if hash(doc, in) != h0 {
			t.Errorf("changing %s changes the hash (would recreate)", name)
		}
	}
	withID := in
	withID.identity = &ModuleIdentity{Password: "p1"}
	withID.endpoint = &HubEndpoint{Hostname: "hub", MQTTPort: 1883}
	h1 := hash(base, withID)
	withID.identity = &ModuleIdentity{Password: "p2"}
	if hash(base, withID) == h1 {
		t.Error("a rotated credential keeps the hash")
	}

	s, _ := buildSpec(parse(base), withID)
	env := strings.Join(s.Config.Env, " ")
	for _, want := range []string{"A=1", "B=2", "LEDGE_MQTT_URL=mqtt://hub:1883", "LEDGE_MQTT_PASSWORD=p2", "IOTEDGE_AUTHSCHEME=sasToken"} {
		if !strings.Contains(env, want) {
			t.Errorf("env %q lacks %s", env, want)
		}
	}
	if s.Host.RestartPolicy.Name != "no" || s.Host.ExtraHosts[0] != "hub:10.0.0.1" || s.Name != "p-m" ||
		s.Net.EndpointsConfig["ledge"].Aliases[0] != "m" {
		t.Errorf("spec %+v %+v", s.Host, s.Net)
	}
	hostNet := strings.Replace(base, "Privileged: true", "NetworkMode: host", 1)
	s, _ = buildSpec(parse(hostNet), withID)
	if s.Host.ExtraHosts[0] != "hub:127.0.0.1" || s.Net != nil {
		t.Errorf("host network: extra hosts %v, net %+v", s.Host.ExtraHosts, s.Net)
	}
}

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	c.Restart.Unit = 0
	c.Rollback.Timeout = -1
	c.Sources.HTTP.URL = "ftp://x"
	c.TrustedKeys = []string{"nope"}
	c.ContainerPrefix = "-bad"
	err := c.Validate()
	for _, want := range []string{"agent.restart.unit", "agent.rollback.timeout", "agent.sources.http.url", "agent.trustedKeys", "agent.containerPrefix"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %s", err, want)
		}
	}
}

func TestReportFormats(t *testing.T) {
	if got := azureTime(time.Date(2021, 6, 12, 0, 27, 46, 383870400, time.UTC)); got != "2021-06-12T00:27:46.3838704" {
		t.Errorf("azureTime = %s", got)
	}
	long := strings.Repeat("x", 1100)
	ch := chunkCreateOptions(long)
	if len(ch) != 3 || len(ch["createOptions"]) != 512 || len(ch["createOptions01"]) != 512 || len(ch["createOptions02"]) != 76 {
		t.Errorf("chunks: %d", len(ch))
	}
	b, _ := json.Marshal(ModuleSettings{Image: "a", CreateOptions: ch})
	var back map[string]string
	json.Unmarshal(b, &back)
	if back["createOptions"]+back["createOptions01"]+back["createOptions02"] != long || back["image"] != "a" {
		t.Errorf("settings JSON %s", b)
	}
}
