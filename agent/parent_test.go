package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"ledge/agent/manifest"
	"ledge/internal/fault"
)

// fakeParent stands in for the hub's link to a parent: tests set twins'
// desired properties and read the reported patches.
type fakeParent struct {
	mu       sync.Mutex
	handler  func(map[string]json.RawMessage)
	desired  map[string]json.RawMessage
	reported map[string]any // merged patches of $edgeAgent
	hub      map[string]any // merged patches of $edgeHub
	patches  int
	down     bool
}

func (f *fakeParent) WatchDesired(modules []string, h func(map[string]json.RawMessage)) (func(), error) {
	f.mu.Lock()
	f.handler = h
	d := f.desired
	f.mu.Unlock()
	if d != nil {
		h(d)
	}
	return func() {}, nil
}

func (f *fakeParent) ReportProperties(_ context.Context, module string, patch json.RawMessage) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return fault.New(fault.Unavailable, "parent unreachable")
	}
	var p map[string]any
	if err := json.Unmarshal(patch, &p); err != nil {
		return err
	}
	switch module {
	case TwinEdgeAgent:
		if f.reported == nil {
			f.reported = map[string]any{}
		}
		merge(f.reported, p)
		f.patches++
	case TwinEdgeHub:
		if f.hub == nil {
			f.hub = map[string]any{}
		}
		merge(f.hub, p)
	default:
		return fmt.Errorf("reported on %s", module)
	}
	return nil
}

// hubReport is the merged $edgeHub reported properties.
func (f *fakeParent) hubReport() map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, _ := json.Marshal(f.hub)
	var out map[string]any
	json.Unmarshal(b, &out)
	return out
}

func merge(dst, patch map[string]any) {
	for k, v := range patch {
		if v == nil {
			delete(dst, k)
			continue
		}
		if pm, ok := v.(map[string]any); ok {
			dm, ok := dst[k].(map[string]any)
			if !ok {
				dm = map[string]any{}
			}
			merge(dm, pm)
			dst[k] = dm
			continue
		}
		dst[k] = v
	}
}

// set replaces the twins' desired properties and tells the agent.
func (f *fakeParent) set(twins map[string]string) {
	d := map[string]json.RawMessage{}
	for k, v := range twins {
		d[k] = json.RawMessage(v)
	}
	f.mu.Lock()
	f.desired = d
	h := f.handler
	f.mu.Unlock()
	if h != nil {
		h(d)
	}
}

func (f *fakeParent) report() map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, _ := json.Marshal(f.reported)
	var out map[string]any
	json.Unmarshal(b, &out)
	return out
}

// agentTwin is $edgeAgent desired properties with the modules given as
// "name image", at twin $version v.
func agentTwin(v int, mods ...string) string {
	var parts []string
	for _, m := range mods {
		f := strings.Fields(m)
		parts = append(parts, fmt.Sprintf(`%q: {"type": "docker", "status": "running", "restartPolicy": "always", "imagePullPolicy": "never", "startupOrder": 0, "settings": {"image": %q}}`, f[0], f[1]))
	}
	return fmt.Sprintf(`{"schemaVersion": "1.1", "runtime": {"type": "docker"}, "modules": {%s}, "$version": %d, "$metadata": {"$lastUpdated": "2024-06-01T00:00:00Z"}}`, strings.Join(parts, ", "), v)
}

// TestParentTwinSource: deployments come from the parent's $edgeAgent
// ($ledge) twins through the same checks as every remote source: a bad
// one is refused and reported (400) while the deployment runs on, the
// reported state goes back in Azure's shape with the twin's $version;
// with trusted keys, an unsigned twin deployment is refused and a signed
// one (its signature in the $ledge twin) applies.
func TestParentTwinSource(t *testing.T) {
	priv, pub := testKey(t)
	p := &fakeParent{}
	p.set(map[string]string{TwinEdgeAgent: agentTwin(3, "web "+imgApp)})
	// The hub's part (routes, store and forward) as the appliance wires it.
	hubSections := map[string]Section{manifest.SectionRoutes: &recordingSection{}, manifest.SectionStoreAndForward: &recordingSection{}}
	ta := newTestAgent(t, func(o *Options) { o.Parent = p; o.Sections = hubSections })
	waitFor(t, 60*time.Second, func() (bool, string) {
		rep := ta.Reported()
		return rep.Deployment != nil && rep.Deployment.State == StateConverged, fmt.Sprintf("%+v", rep.Deployment)
	})
	if d := ta.Reported().Deployment; d.Source != SourceParent || d.Format != "azure" {
		t.Errorf("deployment %+v", d)
	}
	waitFor(t, 10*time.Second, func() (bool, string) {
		r := p.report()
		st, _ := r["lastDesiredStatus"].(map[string]any)
		mods, _ := r["modules"].(map[string]any)
		web, _ := mods["web"].(map[string]any)
		return r["lastDesiredVersion"] == 3.0 && st["code"] == 200.0 && web["runtimeStatus"] == "running" && r["schemaVersion"] == "1.0",
			fmt.Sprintf("%v", r)
	})

	// The same twins again (a reconnection): nothing new applies.
	id := ta.Reported().Deployment.ID
	mark := ta.mark()
	p.set(map[string]string{TwinEdgeAgent: agentTwin(3, "web "+imgApp)})
	ta.waitLog(mark, 10*time.Second, `msg="remote manifest ignored"`, "source=parent")
	if got := ta.Reported().Deployment.ID; got != id {
		t.Errorf("the same twins made deployment %d (was %d)", got, id)
	}

	if h := p.hubReport(); h != nil {
		t.Errorf("$edgeHub reported %v while its twin had no desired properties", h)
	}

	// $edgeHub's desired properties: reported back as edgeHub does, with
	// that twin's own $version.
	hubTwin := func(v int) string {
		return fmt.Sprintf(`{"schemaVersion": "1.1", "routes": {"r": "FROM /messages/* INTO $upstream"}, "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}, "$version": %d}`, v)
	}
	p.set(map[string]string{TwinEdgeAgent: agentTwin(3, "web "+imgApp), TwinEdgeHub: hubTwin(7)})
	// The routes make a new deployment; the 200 must be its own, not the
	// previous deployment's status reported with the new $version.
	waitFor(t, 30*time.Second, func() (bool, string) {
		h := p.hubReport()
		st, _ := h["lastDesiredStatus"].(map[string]any)
		d := ta.Reported().Deployment
		return d != nil && d.ID != id && d.State == StateConverged &&
			h["lastDesiredVersion"] == 7.0 && st["code"] == 200.0 && h["schemaVersion"] == "1.1", fmt.Sprint(h, d)
	})
	id = ta.Reported().Deployment.ID

	// A bad module: refused, reported (on $edgeHub too: its routes came
	// with the refused manifest), the running one stays.
	p.set(map[string]string{TwinEdgeAgent: agentTwin(4, "web "+imgApp, "bad Not/An:Image:Ref"), TwinEdgeHub: hubTwin(8)})
	waitFor(t, 10*time.Second, func() (bool, string) {
		r := p.report()
		st, _ := r["lastDesiredStatus"].(map[string]any)
		return st["code"] == 400.0 && strings.Contains(fmt.Sprint(st["description"]), "modules.bad.image") && r["lastDesiredVersion"] == 4.0, fmt.Sprint(r)
	})
	waitFor(t, 10*time.Second, func() (bool, string) {
		h := p.hubReport()
		st, _ := h["lastDesiredStatus"].(map[string]any)
		return h["lastDesiredVersion"] == 8.0 && st["code"] == 400.0, fmt.Sprint(h)
	})
	if d := ta.Reported().Deployment; d.ID != id {
		t.Errorf("a refused twin deployment changed the deployment: %+v", d)
	}

	// A module removed from the twin goes, and from the reported modules.
	p.set(map[string]string{TwinEdgeAgent: agentTwin(5, "api "+imgApp)})
	waitFor(t, 60*time.Second, func() (bool, string) {
		mods, _ := p.report()["modules"].(map[string]any)
		_, web := mods["web"]
		api, _ := mods["api"].(map[string]any)
		return !web && api["runtimeStatus"] == "running", fmt.Sprint(mods)
	})

	// With trusted keys: unsigned is refused, signed applies.
	ta.stop()
	p2 := &fakeParent{}
	ta.start(func(o *Options) { o.Parent = p2; o.Config.TrustedKeys = []string{pub} })
	twins := map[string]string{TwinEdgeAgent: agentTwin(6, "signed "+imgApp), "$ledge": `{"version": "6"}`}
	p2.set(twins)
	waitFor(t, 10*time.Second, func() (bool, string) {
		rep := ta.Reported()
		return rep.Rejected != nil && rep.Rejected.Source == SourceParent && strings.Contains(rep.Rejected.Reason, "not signed"), fmt.Sprint(rep.Rejected)
	})
	raw := map[string]json.RawMessage{}
	for k, v := range twins {
		raw[k] = json.RawMessage(v)
	}
	data, _, _, err := TwinManifest(raw)
	if err != nil {
		t.Fatal(err)
	}
	twins["$ledge"] = `{"version": "6", "signature": ` + string(signFor(t, priv, string(data))) + `}`
	p2.set(twins)
	waitFor(t, 60*time.Second, func() (bool, string) {
		d := ta.Reported().Deployment
		return d != nil && d.Version == "6" && d.Signer != "" && d.State == StateConverged, fmt.Sprintf("%+v", d)
	})
}

// TestTwinManifest: the same twins give the same bytes whatever their
// order and metadata; the signature is taken out of $ledge; an empty
// $edgeAgent means no deployment.
func TestTwinManifest(t *testing.T) {
	a := map[string]json.RawMessage{
		TwinEdgeAgent: json.RawMessage(`{"schemaVersion":"1.1","modules":{},"$version":4}`),
		TwinEdgeHub:   json.RawMessage(`{"routes":{"r":"FROM /* INTO $upstream"},"schemaVersion":"1.1","$metadata":{}}`),
		"$ledge":      json.RawMessage(`{"version":"2","signature":{"alg":"ed25519","keyId":"k","sig":"AAAA"}}`),
	}
	data, sig, v, err := TwinManifest(a)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"modulesContent":{"$edgeAgent":{"properties.desired":{"modules":{},"schemaVersion":"1.1"}},"$edgeHub":{"properties.desired":{"routes":{"r":"FROM /* INTO $upstream"},"schemaVersion":"1.1"}},"$ledge":{"properties.desired":{"version":"2"}}}}`
	if string(data) != want || v != 4 || sig == nil || sig.KeyID != "k" {
		t.Errorf("got %s v%d sig %+v", data, v, sig)
	}
	if data, _, _, _ := TwinManifest(map[string]json.RawMessage{TwinEdgeAgent: json.RawMessage(`{"$version": 1}`)}); data != nil {
		t.Errorf("an empty $edgeAgent gave %s", data)
	}
}

// FuzzTwinManifest: whatever a parent's twins hold, putting them together
// does not panic, and what comes out is JSON that gives the same bytes
// when its twins are put together again.
func FuzzTwinManifest(f *testing.F) {
	f.Add(`{"schemaVersion":"1.1","modules":{},"$version":4}`, `{"routes":{}}`, `{"version":"2","signature":{"alg":"ed25519","keyId":"k","sig":"AAAA"}}`)
	f.Add(`null`, `[]`, `{"signature": 5}`)
	f.Fuzz(func(t *testing.T, a, h, l string) {
		data, _, _, err := TwinManifest(map[string]json.RawMessage{TwinEdgeAgent: json.RawMessage(a), TwinEdgeHub: json.RawMessage(h), "$ledge": json.RawMessage(l)})
		if err != nil || data == nil {
			return
		}
		twins, err := TwinsOf(data)
		if err != nil {
			return // not a manifest ledge reads: refused later, with the reason
		}
		again, _, _, err := TwinManifest(twins)
		if err != nil || string(again) != string(data) {
			t.Fatalf("put together again: %s, %v\nwas %s", again, err, data)
		}
	})
}

// TestReportFitsTwinStrings: a string over the 4 KB a twin value holds (a
// long error in a status description) is shortened in the report to the
// parent, at a character boundary, so the parent takes it.
func TestReportFitsTwinStrings(t *testing.T) {
	long := strings.Repeat("é", 3000) // 6,000 bytes
	doc := map[string]any{"lastDesiredStatus": map[string]any{"description": long}, "list": []any{long, "short"}, "n": 1.0}
	fitTwinStrings(doc)
	for _, s := range []string{doc["lastDesiredStatus"].(map[string]any)["description"].(string), doc["list"].([]any)[0].(string)} {
		if len(s) > maxTwinString || !utf8.ValidString(s) || !strings.HasSuffix(s, "…") || len(s) < maxTwinString-4 {
			t.Errorf("shortened to %d bytes, valid UTF-8 %v", len(s), utf8.ValidString(s))
		}
	}
	if doc["list"].([]any)[1] != "short" || doc["n"] != 1.0 {
		t.Errorf("other values changed: %v", doc)
	}
}

// TestTwinsOfAzureShapes: a parent's twins come from the deployment where
// manifest.Parse finds it: an IoT Hub configuration's "content", or the
// deprecated "moduleContent".
func TestTwinsOfAzureShapes(t *testing.T) {
	mc := `{"$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "modules": {"cam": {"settings": {"image": "cam:1"}}}}}, "cam": {"properties.desired": {"fps": 5}}}`
	for _, doc := range []string{
		`{"content": {"modulesContent": ` + mc + `}, "metrics": {"queries": {}}, "priority": 10}`,
		`{"moduleContent": ` + mc + `}`,
	} {
		twins, err := TwinsOf([]byte(doc))
		if err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
		if string(twins["cam"]) != `{"fps": 5}` || twins[TwinEdgeAgent] == nil {
			t.Errorf("%s: twins %v", doc, twins)
		}
	}
}
