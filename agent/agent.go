package agent

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"ledge/agent/manifest"
	"ledge/agent/workload"
	"ledge/internal/fault"
)

// Options build an [Agent]. Config, DB and DeviceID are required; the
// seams may be nil (see doc.go).
type Options struct {
	Config   Config
	DB       *sql.DB
	Logger   *slog.Logger
	DeviceID string
	// Instance labels the containers this agent owns (default DeviceID).
	// Two agents on one engine need different instances and prefixes.
	Instance string
	Build    VersionInfo
	// DataDir is ledge's data dir: a module may always bind its own
	// <DataDir>/modules/<module> (see [Policy]).
	DataDir string
	// ParentHost is the parent's host name in nested edge (the host of
	// hub.upstream): what "$upstream" in images stands for unless
	// agent.upstreamRegistry says otherwise. Empty without a parent.
	ParentHost string

	Identities Identities
	Twins      Twins
	Upstream   Upstream
	// Parent is the link to the parent (IoT Hub or a parent ledge): with
	// it, deployments come from this device's $edgeAgent, $edgeHub and
	// $ledge twins there, and the reported state goes back as the
	// $edgeAgent twin's reported properties.
	Parent Parent
	// Workload signs and certifies for modules (the hub's keys and CA):
	// with it, and Identities, every module gets its own workload API
	// socket (package workload) and no key in its environment. It needs
	// DataDir (sockets live in <DataDir>/workload).
	Workload workload.Keys
	// Sections are the owners of manifest sections, by section name
	// (manifest.SectionModels, SectionPipelines, SectionRoutes,
	// SectionStoreAndForward). A manifest with a section nobody owns is
	// refused.
	Sections map[string]Section

	// bootTime overrides the machine's boot time (tests simulate a reboot).
	bootTime time.Time
}

// Agent keeps the appliance in the state its deployment asks for. Its
// methods are safe for concurrent use; Run is called once.
type Agent struct {
	opts     Options
	cfg      Config
	log      *slog.Logger
	store    *store
	eng      *engine
	trusted  []TrustedKey
	policy   *Policy
	bus      *broadcaster
	rec      *reconciler
	workload *workload.Server // nil without Options.Workload
	parent   *parentLink      // nil without Options.Parent; set before Run's loop
	// reportSoon asks Run's loop to report now (cap 1).
	reportSoon chan struct{}
	instance   string
	outcomes   chan outcome
	offers     chan offer // from remote sources, latest wins per source
	count      *counters
	// publishFailed is owned by Run's goroutine.
	publishFailed bool

	started  time.Time
	deployMu sync.Mutex  // serialises accepting and activating deployments
	bootDep  *Deployment // the current deployment when New read the database

	mu             sync.Mutex // guards the fields below
	current        *Deployment
	currentMan     *manifest.Manifest
	activating     *manifest.Manifest // the manifest whose sections activate is applying
	rolledBackFrom *RollbackReport
	rejected       *Rejection
	applied        map[string]json.RawMessage // section -> raw last applied
	appliedTwins   map[string]json.RawMessage
	sectionErrs    map[string]string // section -> Apply error of the current deployment
	reportedRev    int               // bumped on every change worth persisting
}

// New prepares the agent: migrations, trusted keys, the Docker client
// (which connects lazily: a missing engine is reported, not fatal).
func New(ctx context.Context, opts Options) (*Agent, error) {
	cfg := opts.Config
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.DB == nil || opts.DeviceID == "" {
		return nil, errors.New("agent: DB and DeviceID are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Instance == "" {
		opts.Instance = opts.DeviceID
	}
	for name := range opts.Sections {
		if !knownSection(name) {
			return nil, fmt.Errorf("agent: unknown section %q (want one of %v)", name, manifest.SectionNames)
		}
	}
	trusted, err := ParseTrustedKeys(cfg.TrustedKeys)
	if err != nil {
		return nil, fmt.Errorf("agent.trustedKeys: %w", err)
	}
	st, err := openStore(ctx, opts.DB)
	if err != nil {
		return nil, err
	}
	eng, err := newEngine(cfg.DockerHost, opts.Instance)
	if err != nil {
		return nil, err
	}
	policy := NewPolicy(cfg, opts.DataDir)
	policy.Resolve = true
	var wl *workload.Server
	if opts.Workload != nil && opts.Identities != nil {
		if opts.DataDir == "" {
			eng.Close()
			return nil, errors.New("agent: the workload API needs DataDir")
		}
		if wl, err = workload.New(filepath.Join(opts.DataDir, "workload"), opts.Workload, opts.Logger.With("part", "workload")); err != nil {
			eng.Close()
			return nil, err
		}
	}
	a := &Agent{
		opts: opts, cfg: cfg, log: opts.Logger, store: st, eng: eng, trusted: trusted, policy: policy, bus: newBroadcaster(), workload: wl,
		reportSoon: make(chan struct{}, 1),
		instance:   opts.Instance, outcomes: make(chan outcome, 16), offers: make(chan offer, 4), count: &counters{}, started: time.Now(),
		applied: map[string]json.RawMessage{}, appliedTwins: map[string]json.RawMessage{}, sectionErrs: map[string]string{},
	}
	a.rec = newReconciler(a)
	if !opts.bootTime.IsZero() {
		a.rec.bootTime = opts.bootTime
	}
	a.rec.outcomes = a.outcomes
	a.rec.sectionsReady = a.sectionsReady
	a.rec.sectionsProgress = a.sectionsProgress
	cur, err := st.current(ctx)
	if err != nil {
		eng.Close()
		return nil, err
	}
	if cur != nil {
		// Until Run has it running again, it is being applied.
		cur.State, cur.Reason = StateApplying, ""
	}
	a.current, a.bootDep = cur, cur
	return a, nil
}

func knownSection(name string) bool {
	for _, n := range manifest.SectionNames {
		if n == name {
			return true
		}
	}
	return false
}

// Close releases the Docker client. Call it after Run returns.
func (a *Agent) Close() error {
	if a.workload != nil {
		a.workload.Close()
	}
	return a.eng.Close()
}

// Run reconciles until ctx ends: it applies the persisted deployment at
// once (no network needed), follows the engine, takes deployments from
// the sources, rolls back what does not converge, and persists and
// publishes the reported state. Containers keep running when it returns.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	recErr := make(chan error, 1)
	wg.Go(func() { recErr <- a.rec.run(ctx) })

	a.warnSigning()
	if err := a.boot(ctx); err != nil {
		a.log.Error("apply the persisted deployment", "err", err)
	}
	if u := a.opts.Upstream; u != nil && a.cfg.Sources.MQTT.Enabled {
		stop, err := a.subscribeUpstream(u)
		if err != nil {
			a.log.Error("deployment topic", "err", err)
		} else {
			defer stop()
		}
	}
	if a.cfg.Sources.HTTP.URL != "" {
		wg.Go(func() { a.pollHTTP(ctx) })
	}
	if p := a.opts.Parent; p != nil {
		stop, err := a.watchParent(p)
		if err != nil {
			a.log.Error("deployments from the parent", "err", err)
		} else {
			defer stop()
		}
	}
	wg.Go(func() { a.takeOffers(ctx) })

	tick := time.NewTicker(reportEvery)
	defer tick.Stop()
	var lastReported []byte
	for {
		select {
		case <-ctx.Done():
			a.persistReported(context.WithoutCancel(ctx), &lastReported, true)
			return nil
		case err := <-recErr:
			if err != nil {
				return fmt.Errorf("reconciler: %w", err)
			}
			return nil
		case o := <-a.outcomes:
			a.handleOutcome(ctx, o)
			a.persistReported(ctx, &lastReported, false)
		case <-tick.C:
			a.persistReported(ctx, &lastReported, false)
		case <-a.reportSoon:
			a.persistReported(ctx, &lastReported, false)
		}
	}
}

// reportEvery is how often the reported state is compared, persisted and
// published when it changed.
const reportEvery = 2 * time.Second

// boot applies the current deployment as persisted: at power-on with no
// network, everything it lists starts.
func (a *Agent) boot(ctx context.Context) error {
	a.deployMu.Lock()
	defer a.deployMu.Unlock()
	d := a.current
	switch {
	case d == nil:
		a.log.Info("no deployment yet: waiting for one (ledge deploy apply, or a configured source)")
		return nil
	case d != a.bootDep:
		return nil // one was applied before Run got here
	}
	man, _, err := a.parse(d.Manifest, false)
	if err != nil {
		return fmt.Errorf("deployment %d (version %s) no longer parses: %w", d.ID, d.Version, err)
	}
	a.log.Info("applying the persisted deployment", "id", d.ID, "version", d.Version, "state", d.State)
	// Whatever it was, it must converge again now.
	b := *d
	b.State, b.Reason = StateApplying, ""
	if err := a.store.setOutcome(ctx, d.ID, StateApplying, "", time.Time{}); err != nil {
		return err
	}
	a.activate(ctx, &b, man, true)
	return nil
}

// Resync compares everything with the engine now and acts on what
// differs, as the agent does every minute and on every engine event; it
// returns when the pass is done.
func (a *Agent) Resync(ctx context.Context) error {
	done := make(chan struct{})
	select {
	case a.rec.resyncCh <- done:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Events subscribes to the agent's events (pull progress, module status,
// deployment state). A subscriber that does not keep up loses events;
// call cancel when done.
func (a *Agent) Events(buffer int) (<-chan Event, func()) { return a.bus.subscribe(buffer) }

// DroppedEvents counts events subscribers missed.
func (a *Agent) DroppedEvents() int64 { return a.bus.dropped() }

// Healthy reports whether the Docker engine answers.
func (a *Agent) Healthy(ctx context.Context) error {
	if err := a.eng.ping(ctx); err != nil {
		return fault.Wrap(fault.Unavailable, fmt.Errorf("docker engine unreachable at %s: %w", a.eng.cli.DaemonHost(), err))
	}
	return nil
}

// Current returns the current deployment (nil when none) and its model.
func (a *Agent) Current() (*Deployment, *manifest.Manifest) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.current == nil {
		return nil, nil
	}
	d := *a.current
	return &d, a.currentMan
}

// RegistryCredential returns the user name and password the deployment
// lists in its registryCredentials for a registry host ("" when none),
// for the owners of sections that fetch from registries (oci:// models).
func (a *Agent) RegistryCredential(host string) (username, password string) {
	a.mu.Lock()
	man, cur := a.currentMan, a.current
	if a.activating != nil {
		man = a.activating // its sections are being applied: they fetch with its credentials
	}
	a.mu.Unlock()
	if man == nil && cur != nil {
		// The persisted deployment, before Run applies it again (the
		// model store resumes interrupted downloads as it starts).
		man, _, _ = a.parse(cur.Manifest, false)
	}
	if man == nil {
		return "", ""
	}
	if c := man.Credential(host); c != nil {
		return c.Username, c.Password
	}
	return "", ""
}

// History lists past deployments, newest first.
func (a *Agent) History(ctx context.Context, limit int) ([]Deployment, error) {
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	return a.store.history(ctx, limit)
}

// Reported returns the reported state now.
func (a *Agent) Reported() *Reported {
	snap := a.rec.snapshot()
	a.mu.Lock()
	defer a.mu.Unlock()
	rep := &Reported{
		SchemaVersion: "1.0",
		Version:       a.opts.Build,
		Runtime: RuntimeInfo{Type: "docker", Settings: RuntimeSettings{RegistryCredentials: map[string]any{}},
			Platform: snap.platform},
		SystemModules: map[string]ModuleReport{
			// ledge itself is the agent (and, wired in, the hub).
			"edgeAgent": {Type: "docker", Status: "running", RestartPolicy: string(manifest.RestartAlways),
				RuntimeStatus: StatusRunning, LastStartTimeUtc: azureTime(a.started),
				Settings: ModuleSettings{Image: "ledge:" + a.opts.Build.Version}},
		},
		Modules:  snap.modules,
		Rejected: a.rejected,
		Engine:   EngineReport{Connected: snap.connected, Error: snap.engineErr, Host: a.eng.cli.DaemonHost()},
		Signing:  a.signingReport(),
	}
	if rep.Runtime.Platform.OS == "" {
		rep.Runtime.Platform = PlatformInfo{OS: runtime.GOOS, Architecture: runtime.GOARCH}
	}
	if rep.Modules == nil {
		rep.Modules = map[string]ModuleReport{}
	}
	switch d := a.current; {
	case d == nil:
		rep.LastDesiredStatus = DesiredStatus{Code: 417, Description: "no deployment set yet"}
	default:
		rep.LastDesiredVersion = d.Version
		rep.Deployment = &DeploymentReport{ID: d.ID, Version: d.Version, Digest: d.Digest, Source: d.Source, Format: d.Format,
			Signer: d.Signer, State: d.State, Reason: d.Reason, ReceivedAt: azureTime(d.ReceivedAt),
			ConvergedAt: azureTime(d.ConvergedAt), RolledBackFrom: a.rolledBackFrom, Unsigned: a.unsignedReason(d)}
		switch d.State {
		case StateConverged:
			rep.LastDesiredStatus = DesiredStatus{Code: 200, Description: "converged"}
		case StateFailed:
			rep.LastDesiredStatus = DesiredStatus{Code: 500, Description: d.Reason}
		default:
			rep.LastDesiredStatus = DesiredStatus{Code: 200, Description: "applying"}
			if a.rolledBackFrom != nil {
				rep.LastDesiredStatus = DesiredStatus{Code: 500, Description: fmt.Sprintf("deployment %s rolled back: %s", a.rolledBackFrom.Version, a.rolledBackFrom.Reason)}
			}
		}
		if a.rolledBackFrom != nil && d.State == StateConverged {
			rep.LastDesiredStatus = DesiredStatus{Code: 500, Description: fmt.Sprintf("deployment %s rolled back to %s: %s", a.rolledBackFrom.Version, d.Version, a.rolledBackFrom.Reason)}
		}
	}
	if a.rejected != nil && (a.current == nil || a.rejected.At > azureTime(a.current.ReceivedAt)) {
		code := 400
		rep.LastDesiredStatus = DesiredStatus{Code: code, Description: "manifest rejected: " + a.rejected.Reason}
	}
	rep.Sections = map[string]SectionReport{}
	for name, h := range a.opts.Sections {
		sr := SectionReport{State: SectionReady}
		if a.applied[name] == nil {
			continue
		}
		if r, ok := h.(SectionReporter); ok {
			sr = r.Report()
		}
		if e := a.sectionErrs[name]; e != "" {
			sr = SectionReport{State: SectionFailed, Detail: e}
		}
		rep.Sections[name] = sr
	}
	return rep
}

// Deployment returns deployment id with its manifest text as received
// (id 0: the current one).
func (a *Agent) Deployment(ctx context.Context, id int64) (*Deployment, error) {
	var d *Deployment
	var err error
	if id == 0 {
		d, err = a.store.current(ctx)
	} else {
		d, err = a.store.get(ctx, id)
	}
	if err != nil {
		return nil, err
	}
	if d == nil {
		return nil, fault.New(fault.NotFound, "no deployment %d", id)
	}
	return d, nil
}
