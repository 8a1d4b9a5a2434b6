package agent

import (
	"context"
	"encoding/json"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"ledge/agent/manifest"
	"ledge/internal/testenv"
)

// orderedSection records into a shared log, to check the order sections
// are applied in.
type orderedSection struct {
	recordingSection
	name string
	log  *[]string
	mu   *sync.Mutex
}

func (s *orderedSection) Apply(ctx context.Context, raw json.RawMessage) error {
	if err := s.recordingSection.Apply(ctx, raw); err != nil {
		return err
	}
	s.mu.Lock()
	*s.log = append(*s.log, s.name)
	s.mu.Unlock()
	return nil
}

// TestSections: every section goes to its owner, validated before
// anything changes and applied in order (models, storeAndForward, routes,
// pipelines); a section still working in the background holds the
// deployment in applying; one that fails to apply fails the deployment,
// which is rolled back, giving the owners back what they had.
func TestSections(t *testing.T) {
	var mu sync.Mutex
	var order []string
	secs := map[string]*orderedSection{}
	opts := map[string]Section{}
	for _, name := range manifest.SectionNames {
		s := &orderedSection{name: name, log: &order, mu: &mu}
		secs[name], opts[name] = s, s
	}
	ta := newTestAgent(t, func(o *Options) { o.Sections = opts })
	doc := func(version, pipeline string) string {
		return "version: '" + version + "'\nmodels: [{name: people, version: '2'}]\nstoreAndForward: {timeToLiveSecs: 60}\n" +
			"routes:\n  r1: FROM /messages/* INTO $upstream\npipelines: [{name: " + pipeline + "}]\n"
	}
	secs[manifest.SectionModels].report = &SectionReport{State: SectionPending, Detail: "downloading 40%"}
	res := ta.apply(doc("1", "gate"))
	var kinds []string
	for _, c := range res.Plan.Changes {
		kinds = append(kinds, c.Kind+":"+c.Name)
	}
	if !strings.Contains(strings.Join(kinds, " "), "route:r1") {
		t.Errorf("plan lacks the routes owner's changes: %v", kinds)
	}
	// A full pass (convergence checked) with the models still pending.
	if err := ta.Resync(t.Context()); err != nil {
		t.Fatal(err)
	}
	if rep := ta.Reported(); rep.Deployment.State != StateApplying || rep.Sections["models"].State != SectionPending {
		t.Fatalf("with models downloading: %+v sections %+v", rep.Deployment, rep.Sections)
	}
	mu.Lock()
	if got := strings.Join(order, ","); got != "models,storeAndForward,routes,pipelines" {
		t.Errorf("applied in order %s", got)
	}
	mu.Unlock()
	if got := secs[manifest.SectionRoutes].calls()[0]; got != `{"r1":{"route":"FROM /messages/* INTO $upstream"}}` {
		t.Errorf("routes got %s", got)
	}
	if got := secs[manifest.SectionStoreAndForward].calls()[0]; got != `{"timeToLiveSecs":60}` {
		t.Errorf("storeAndForward got %s", got)
	}
	secs[manifest.SectionModels].mu.Lock()
	secs[manifest.SectionModels].report = nil
	secs[manifest.SectionModels].mu.Unlock()
	ta.waitState("1", StateConverged, 10*time.Second)

	// Version 2's pipelines cannot be applied: failed, rolled back, and
	// the pipelines owner gets version 1's section again.
	secs[manifest.SectionPipelines].failOn = "broken-pipe"
	ta.apply(doc("2", "broken-pipe"))
	rep := ta.waitState("1", StateConverged, 15*time.Second)
	if rb := rep.Deployment.RolledBackFrom; rb == nil || !strings.Contains(rb.Reason, "section pipelines: cannot apply broken-pipe") {
		t.Errorf("rolledBackFrom %+v", rb)
	}
	calls := secs[manifest.SectionPipelines].calls()
	if last := calls[len(calls)-1]; !strings.Contains(last, "gate") {
		t.Errorf("pipelines after the rollback: %v", calls)
	}
	// Sections that did not change are not applied again.
	if n := len(secs[manifest.SectionRoutes].calls()); n != 1 {
		t.Errorf("routes applied %d times, want once", n)
	}
}

// TestRunStopsCleanly: after Run returns and Close, none of the agent's
// goroutines is left (engine watcher, reconciler, pulls, sources).
func TestRunStopsCleanly(t *testing.T) {
	docker(t)
	images(t)
	srv := &manifestServer{}
	srv.set(manifestYAML("1", "web "+imgApp+" always 0"), nil)
	ts := newHTTPServer(t, srv)
	before := settledGoroutines()
	ta := newTestAgent(t, withConfig(func(c *Config) {
		c.Sources.HTTP.URL = ts + "/m.yaml"
		c.Sources.HTTP.Interval = time.Second
	}))
	events, cancel := ta.Events(16)
	ta.waitState("1", StateConverged, 30*time.Second)
	cancel()
	for len(events) > 0 {
		<-events
	}
	ta.stop()
	ta.db.Close() // the test's database, not the agent's to close
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines before, %d after stopping:\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}

// TestSectionProgressKeepsDeploymentAlive: a section that stays pending
// past the rollback timeout while its progress counter moves (a long model
// download) does not get the deployment rolled back; one whose counter
// stops does.
func TestSectionProgressKeepsDeploymentAlive(t *testing.T) {
	models := &recordingSection{}
	ta := newTestAgent(t, func(o *Options) {
		o.Sections = map[string]Section{manifest.SectionModels: models}
		o.Config.Rollback.Timeout = 600 * time.Millisecond
	})
	ta.apply("version: '1'\n")
	ta.waitState("1", StateConverged, 10*time.Second)

	models.mu.Lock()
	models.report = &SectionReport{State: SectionPending, Detail: "downloading", Progress: 1}
	models.mu.Unlock()
	ta.apply("version: '2'\nmodels: [{name: big, version: '1'}]\n")
	// 3 s of a download that keeps moving: five times the timeout.
	for i := range 30 {
		time.Sleep(100 * time.Millisecond)
		models.mu.Lock()
		models.report = &SectionReport{State: SectionPending, Detail: "downloading", Progress: int64(2 + i)}
		models.mu.Unlock()
	}
	if rep := ta.Reported(); rep.Deployment == nil || rep.Deployment.Version != "2" || rep.Deployment.State != StateApplying {
		t.Fatalf("a moving download was given up: %+v", rep.Deployment)
	}
	// The download stalls: after the timeout, rolled back to version 1.
	rep := ta.waitState("1", StateConverged, 10*time.Second)
	if rb := rep.Deployment.RolledBackFrom; rb == nil || !strings.Contains(rb.Reason, "without progress") {
		t.Errorf("rolledBackFrom %+v", rb)
	}
}

// credentialSection looks up a registry's credentials while it is
// applied, as the model store does for an oci:// model it starts to
// download then.
type credentialSection struct {
	recordingSection
	ag   func() *Agent
	host string
	mu   sync.Mutex
	seen []string
}

func (s *credentialSection) Apply(ctx context.Context, raw json.RawMessage) error {
	u, p := s.ag().RegistryCredential(s.host)
	s.mu.Lock()
	s.seen = append(s.seen, u+":"+p)
	s.mu.Unlock()
	return s.recordingSection.Apply(ctx, raw)
}

// TestSectionSeesItsDeploymentsCredentials: an owner applying a section
// finds the registryCredentials of the deployment that section came with,
// not those of the deployment before it (the model store started an
// oci:// download with none, got 401 "basic credential not found" and
// failed the deployment, when its download ran before the agent had made
// the new deployment current; or with the old deployment's).
func TestSectionSeesItsDeploymentsCredentials(t *testing.T) {
	var ta *testAgent
	models := &credentialSection{ag: func() *Agent { return ta.Agent }, host: "reg.example:5000"}
	ta = newTestAgent(t, func(o *Options) { o.Sections = map[string]Section{manifest.SectionModels: models} })
	doc := func(version, user string) string {
		return "version: '" + version + "'\nregistryCredentials:\n  r: {address: 'https://reg.example:5000/', username: " + user +
			", password: pw-" + user + "}\nmodels: [{name: people, version: '" + version + "'}]\n"
	}
	ta.apply(doc("1", "first"))
	ta.apply(doc("2", "second"))
	models.mu.Lock()
	defer models.mu.Unlock()
	if got := strings.Join(models.seen, " "); got != "first:pw-first second:pw-second" {
		t.Errorf("the models section saw the credentials %q while applied, want first:pw-first second:pw-second", got)
	}
	if u, p := ta.RegistryCredential("REG.example:5000"); u != "second" || p != "pw-second" {
		t.Errorf("after the apply: %q %q, want the current deployment's", u, p)
	}

	// After a restart, before Run applies the persisted deployment again:
	// the model store resumes the downloads a stop interrupted as it
	// starts, before the agent.
	ta.stop()
	a, err := New(t.Context(), Options{Config: withPrefix(testConfig(), ta.prefix), DB: testenv.DBAt(t, ta.dbPath),
		DeviceID: "dev-" + ta.instance, Instance: ta.instance, Logger: testLogger(t), Build: VersionInfo{Version: "test"}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if u, p := a.RegistryCredential("reg.example:5000"); u != "second" || p != "pw-second" {
		t.Errorf("after a restart, before Run: %q %q, want the persisted deployment's", u, p)
	}
}

func withPrefix(c Config, prefix string) Config {
	c.ContainerPrefix = prefix
	return c
}
