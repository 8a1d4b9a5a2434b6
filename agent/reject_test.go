package agent

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"ledge/agent/manifest"
	"ledge/internal/fault"
)

// TestBadManifestsChangeNothing: with trusted keys configured and a
// deployment running, each bad manifest is refused with a reason naming
// what is wrong and where, and nothing changes: same deployment, same
// containers, no new history entry.
func TestBadManifestsChangeNothing(t *testing.T) {
	priv, pub := testKey(t)
	_, otherPub := testKey(t)
	routes := &recordingSection{}
	ta := newTestAgent(t, withConfig(func(c *Config) { c.TrustedKeys = []string{pub, otherPub} }),
		func(o *Options) { o.Sections = map[string]Section{manifest.SectionRoutes: routes} })
	good := manifestYAML("1", "web "+imgApp+" always 0", "api "+imgApp+" on-failure 1") +
		"routes:\n  toCloud: FROM /messages/modules/web/outputs/* INTO $upstream\n"
	sig := signFor(t, priv, good)
	if _, err := ta.Apply(t.Context(), []byte(good), sig); err != nil {
		t.Fatal(err)
	}
	ta.waitState("1", StateConverged, 30*time.Second)
	before := ta.containers()
	if calls := routes.calls(); len(calls) != 1 || !strings.Contains(calls[0], "toCloud") {
		t.Fatalf("routes section got %v", calls)
	}

	azureBadCO := `{"modulesContent": {"$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "modules": {
  "web": {"settings": {"image": "` + imgApp + `", "createOptions": "{\"HostConfig\": {\"Binds\": [\"/a:/b\"]",
    "createOptions01": ", }"}}}}}, "$ledge": {"properties.desired": {"version": "2"}}}}`
	for _, tc := range []struct {
		name     string
		doc      string
		sign     bool
		tamper   bool
		want     []string
		wantKind fault.Kind
	}{
		{"unknown restart policy", manifestYAML("2", "web "+imgApp+" sometimes 0"), true, false,
			[]string{"line 5", "modules.web.restartPolicy", `"sometimes" is not a restart policy`}, fault.Invalid},
		{"bad createOptions JSON", azureBadCO, true, false,
			[]string{"modules.web.settings.createOptions", "invalid createOptions", "unexpected end of text"}, fault.Invalid},
		{"duplicate module", `{"version": "2", "modules": {"web": {"image": "` + imgApp + `"}, "web": {"image": "` + imgApp2 + `"}}}`, true, false,
			[]string{"modules.web", `duplicate key "web"`, "line 1"}, fault.Invalid},
		{"route syntax error", manifestYAML("2", "web "+imgApp+" always 0") + "routes:\n  toCloud: FROM BROKEN INTO $upstream\n", true, false,
			[]string{"routes: syntax error at byte"}, fault.Invalid},
		{"section nobody owns", manifestYAML("2", "web "+imgApp+" always 0") + "pipelines: [{name: gate}]\n", true, false,
			[]string{"pipelines: this ledge has no component that takes pipelines"}, fault.Invalid},
		{"twins without a hub", manifestYAML("2", "web "+imgApp+" always 0") + "twins:\n  web: {a: 1}\n", true, false,
			[]string{"twins: this ledge has no hub"}, fault.Invalid},
		{"signature mismatch", manifestYAML("2", "web "+imgApp2+" always 0"), true, true,
			[]string{"does not match the manifest"}, fault.Unauthorized},
		{"unsigned", manifestYAML("2", "web "+imgApp2+" always 0"), false, false,
			[]string{"not signed", "agent.trustedKeys", "ledge deploy sign"}, fault.Unauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s []byte
			if tc.sign {
				s = signFor(t, priv, tc.doc)
			}
			doc := tc.doc
			if tc.tamper {
				doc = strings.Replace(doc, "always", "never", 1)
			}
			_, err := ta.Apply(t.Context(), []byte(doc), s)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nlacks %q", err, w)
				}
			}
			if k := fault.KindOf(err); k != tc.wantKind {
				t.Errorf("kind %q, want %q", k, tc.wantKind)
			}
			if _, err := ta.Check(t.Context(), []byte(doc), s); err == nil {
				t.Error("Check accepted what Apply refused")
			}
		})
	}
	// A full pass of the reconciler: whatever a refused manifest had set
	// going would show now.
	if err := ta.Resync(t.Context()); err != nil {
		t.Fatal(err)
	}
	assertUnchanged(t, before, ta.containers())
	if rep := ta.Reported(); rep.Deployment.Version != "1" || rep.Deployment.State != StateConverged {
		t.Errorf("deployment after the bad ones: %+v", rep.Deployment)
	}
	if hist, _ := ta.History(t.Context(), 10); len(hist) != 1 {
		t.Errorf("history has %d entries, want 1", len(hist))
	}
	if calls := routes.calls(); len(calls) != 1 {
		t.Errorf("routes were applied again: %v", calls)
	}
}

// TestMissingImageRollsBack: a deployment whose image does not exist (the
// registry says so) fails at once and the last good deployment comes
// back; the old container kept running meanwhile. Both are reported.
func TestMissingImageRollsBack(t *testing.T) {
	reg := localRegistry(t)
	ta := newTestAgent(t)
	ta.apply(manifestYAML("1", "web "+imgApp+" always 0", "api "+imgApp+" always 1"))
	ta.waitState("1", StateConverged, 30*time.Second)
	before := ta.containers()

	bad := strings.Replace(manifestYAML("2", "web "+reg.addr+"/ledge-test/missing:1 always 0", "api "+imgApp+" always 1"),
		"imagePullPolicy: never", "imagePullPolicy: on-create", 1) +
		"registryCredentials:\n  local: {address: " + reg.addr + ", username: " + reg.user + ", password: " + reg.password + "}\n"
	start := time.Now()
	ta.apply(bad)
	rep := ta.waitState("1", StateConverged, 30*time.Second)
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("rollback took %s; a missing image should fail at once, not after the timeout", took)
	}
	rb := rep.Deployment.RolledBackFrom
	if rb == nil || rb.Version != "2" || !strings.Contains(rb.Reason, "pull failed") {
		t.Fatalf("rolledBackFrom = %+v", rb)
	}
	if rep.LastDesiredStatus.Code != 500 || !strings.Contains(rep.LastDesiredStatus.Description, "rolled back") {
		t.Errorf("lastDesiredStatus = %+v", rep.LastDesiredStatus)
	}
	assertUnchanged(t, before, ta.containers())
	hist, _ := ta.History(t.Context(), 10)
	if len(hist) != 2 || hist[0].Version != "2" || hist[0].State != StateRolledBack || !strings.Contains(hist[0].Reason, "missing") {
		t.Errorf("history: %+v", hist)
	}
}

// TestCrashLoopRollsBack: a deployment whose module crash-loops does not
// converge within the rollback timeout and is rolled back; a manual
// rollback then goes back one more good deployment, and one with nothing
// before it is refused.
func TestCrashLoopRollsBack(t *testing.T) {
	// web crashes 20 ms after it starts; stable means 2 s without a
	// restart, so that a machine too busy to run it for 300 ms (the
	// harness's setting) does not see it stable first.
	ta := newTestAgent(t, withConfig(func(c *Config) { c.Rollback.StableFor = 2 * time.Second; c.Rollback.Timeout = 6 * time.Second }))
	ta.apply(manifestYAML("1", "web "+imgApp+" always 0"))
	ta.waitState("1", StateConverged, 30*time.Second)
	ta.apply(manifestYAML("2", "web "+imgApp+" always 0", "api "+imgApp+" always 0"))
	ta.waitState("2", StateConverged, 30*time.Second)
	good := ta.containers()

	ta.apply(manifestYAML("3", "web "+imgApp+" always 0 crash", "api "+imgApp+" always 0"))
	rep := ta.waitState("2", StateConverged, 30*time.Second)
	if rb := rep.Deployment.RolledBackFrom; rb == nil || rb.Version != "3" || !strings.Contains(rb.Reason, "module web") {
		t.Fatalf("rolledBackFrom = %+v", rep.Deployment.RolledBackFrom)
	}
	now := ta.containers()
	if now["api"].ID != good["api"].ID || !now["web"].Running {
		t.Errorf("after the rollback: api %.12s (was %.12s), web running %v", now["api"].ID, good["api"].ID, now["web"].Running)
	}

	d, err := ta.Rollback(t.Context())
	if err != nil || d.Version != "1" {
		t.Fatalf("manual rollback: %+v, %v", d, err)
	}
	ta.waitState("1", StateConverged, 30*time.Second)
	if _, ok := ta.containers()["api"]; ok {
		t.Error("api still there after rolling back to version 1")
	}
	if _, err := ta.Rollback(t.Context()); !fault.Is(err, fault.Conflict) {
		t.Errorf("rollback with nothing before: %v, want a conflict", err)
	}
}

func signFor(t testing.TB, priv []byte, doc string) []byte {
	t.Helper()
	k, err := ParsePrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := json.Marshal(Sign(k, []byte(doc)))
	return s
}

// testKey makes a key pair: the private PEM and the trusted-key entry.
func testKey(t testing.TB) ([]byte, string) {
	t.Helper()
	priv, pubPEM, _, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := PublicKeyBase64(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	return priv, pub
}
