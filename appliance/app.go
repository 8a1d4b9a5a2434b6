package appliance

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"ledge/agent"
	"ledge/hub"
	"ledge/models"
	"ledge/pipeline"
	"ledge/web"
)

// BuildInfo identifies the binary.
type BuildInfo struct {
	Version string
	Commit  string
}

// component is a long-lived service run by App.
type component struct {
	name string
	run  func(ctx context.Context) error
}

// App is a configured appliance, ready to Run. Its methods are not safe for
// concurrent use; Run is called once.
type App struct {
	cfg      Config
	build    BuildInfo
	log      *slog.Logger
	db       *sql.DB
	started  time.Time
	registry *prometheus.Registry
	health   *healthSet
	// events fans the components' events out to the dashboard's SSE.
	events *web.Broadcaster

	web       *web.Server
	system    *systemReader
	agent     *agent.Agent // nil when agent.enabled is false
	hub       *hub.Hub     // nil when hub.enabled is false
	link      *hub.Link    // the upstream link alone when the hub is off (nil otherwise)
	models    *models.Store
	pipelines *pipeline.Engine
	// pipelineSet layers ledge.yaml's, the dashboard's and the
	// deployment's pipelines.
	pipelineSet *pipelineSet
	components  []component // in start order
	// eventSources feed the dashboard's event stream (see events.go).
	eventSources []eventSource
	closers      []func() error
	// adminPassword is the admin password this start made ("" when one
	// was set before).
	adminPassword string
}

// New prepares an appliance from cfg: data dir, database, components. It
// starts nothing; a failure leaves nothing running.
func New(ctx context.Context, cfg Config, build BuildInfo, log *slog.Logger) (_ *App, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// Everything below (the database, the CA a container bind-mounts, the
	// socket the CLI looks for) needs a path that means the same from
	// anywhere.
	if cfg.DataDir, err = filepath.Abs(cfg.DataDir); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	cfg.setPresence()
	cfg.Inference.TensorRTCache = cfg.Inference.tensorRTCache(cfg.DataDir)
	a := &App{cfg: cfg, build: build, log: log, started: time.Now(), health: newHealthSet()}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	closeToOthers(cfg.DataDir, log)
	a.db, err = OpenDB(ctx, filepath.Join(cfg.DataDir, "ledge.db"), cfg.Database.Synchronous)
	if err != nil {
		return nil, err
	}
	a.closers = append(a.closers, a.db.Close)
	if err := a.recordFirstStart(ctx); err != nil {
		return nil, err
	}
	a.registry = newRegistry(build)
	hubAPI, hubWS, err := a.newHub(ctx)
	if err != nil {
		return nil, cfg.explainListen(err)
	}
	a.events = web.NewBroadcaster()

	sections := map[string]agent.Section{}
	if err := a.newModels(ctx, sections); err != nil {
		return nil, err
	}
	if err := a.addPipelines(ctx); err != nil {
		return nil, err
	}
	a.models.SetActivator(modelActivator{a.pipelines})
	hist := newPipelineHistory(a.pipelines)
	a.add("pipeline-history", hist.Run)
	sections["pipelines"] = pipelinesSection{a.pipelineSet}
	deploy, err := a.newAgent(ctx, sections)
	if err != nil {
		return nil, err
	}
	var webTLS *tls.Config
	if a.hub != nil && cfg.HTTP.ListenTLS != "" {
		webTLS = a.hub.ServerTLSConfig()
	} else if cfg.HTTP.ListenTLS != "" {
		log.Info("https off: its certificate comes from the hub, which is disabled")
	}
	pipes := pipelinesAPI{eng: a.pipelines, set: a.pipelineSet, hist: hist}
	a.system = &systemReader{dataDir: cfg.DataDir}
	wo := web.Options{
		ListenTLS:     cfg.HTTP.ListenTLS,
		TLS:           webTLS,
		MQTTWebSocket: hubWS,
		Listen:        cfg.HTTP.Listen,
		Timeouts: web.Timeouts{Read: cfg.HTTP.ReadTimeout, Write: cfg.HTTP.WriteTimeout, Idle: cfg.HTTP.IdleTimeout,
			MaxAnonymousConns: cfg.HTTP.MaxAnonymousConnections},
		Socket:        filepath.Join(cfg.DataDir, "ledge.sock"),
		DataDir:       cfg.DataDir,
		PasswordFile:  PasswordFile(cfg.DataDir),
		Logger:        log.With("component", "web"),
		Health:        a.health.check,
		Metrics:       metricsHandler(a.registry),
		Version:       build.Version,
		Dev:           cfg.Dev,
		DB:            a.db,
		DeviceID:      cfg.DeviceID,
		PublicMetrics: cfg.HTTP.PublicMetrics,
		System:        a.system,
		Events:        a.events,
		Pipelines:     pipes,
		Frames:        pipes,
		EventLog:      pipes,
		Models:        modelsAPI{a.models},
	}
	if hubAPI != nil {
		wo.HubStatus, wo.HubIdentities, wo.HubTwins, wo.HubMessages = hubAPI, hubAPI, hubAPI, hubAPI
	}
	switch {
	case cfg.Hub.Upstream.Mode == "":
	case a.hub != nil:
		wo.Upstream = upstreamAPI(a.hub.Upstream)
	case a.link != nil:
		wo.Upstream = upstreamAPI(a.link.Status)
	}
	if deploy != nil {
		wo.Deployments, wo.Modules = deploy, deploy
	}
	srv, err := web.New(wo)
	if err != nil {
		return nil, cfg.explainListen(err)
	}
	a.web = srv
	a.closers = append(a.closers, srv.Close)
	if a.agent != nil {
		a.eventSources = append(a.eventSources, a.agentEvents)
	}
	a.eventSources = append(a.eventSources, a.pipelineEvents, a.modelEvents)
	a.add("events", a.forwardEvents)
	a.add("web", srv.Run)
	a.add("disk", func(ctx context.Context) error { return a.system.watchDisk(ctx, log.With("component", "system")) })
	a.health.add("database", func(ctx context.Context) error { return a.db.PingContext(ctx) })
	a.add("health", func(ctx context.Context) error { return a.health.watch(ctx, a.log) })
	if n, period := systemdFromEnv(); n != nil { // under a Type=notify unit (deploy/ledge.service)
		w := &systemdWatchdog{n: n, period: period, health: a.health, log: log.With("component", "systemd")}
		a.add("systemd", w.Run)
	}
	// Last: every listener is bound, so a start that fails made no password.
	if err := a.firstPassword(ctx); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *App) add(name string, run func(ctx context.Context) error) {
	a.components = append(a.components, component{name: name, run: run})
}

func (a *App) recordFirstStart(ctx context.Context) error {
	_, err := a.db.ExecContext(ctx, `INSERT OR IGNORE INTO appliance_meta (key, value) VALUES ('first_start', ?)`,
		time.Now().UTC().Format(time.RFC3339))
	if err != nil {
		return fmt.Errorf("record first start: %w", err)
	}
	return nil
}

func (a *App) webAddr() string { return a.web.Addr().String() }

// DB is the appliance's database.
func (a *App) DB() *sql.DB { return a.db }

// Run starts the components in order and blocks until ctx ends or one of
// them fails; then it stops them in reverse order within the shutdown
// timeout. It returns the first component failure, if any.
func (a *App) Run(ctx context.Context) error {
	type running struct {
		name   string
		cancel context.CancelFunc
		done   chan struct{}
		err    error
	}
	a.system.unclean.Store(a.checkRunMark())
	markCtx, stopMark := context.WithCancel(context.WithoutCancel(ctx))
	defer stopMark()
	go a.touchRunMark(markCtx)
	failed := make(chan *running, len(a.components))
	var all []*running
	for _, c := range a.components {
		cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		r := &running{name: c.name, cancel: cancel, done: make(chan struct{})}
		go func() {
			defer close(r.done)
			r.err = c.run(cctx)
			if cctx.Err() == nil {
				if r.err == nil {
					r.err = errors.New("stopped unexpectedly")
				}
				failed <- r
			}
		}()
		all = append(all, r)
		a.log.Debug("component started", "component", c.name)
	}
	a.log.Info("ledge running", "version", a.build.Version, "device", a.cfg.DeviceID,
		"http", a.cfg.HTTP.Listen, "dataDir", a.cfg.DataDir, "dev", a.cfg.Dev, "go", runtime.Version())

	var cause error
	select {
	case <-ctx.Done():
		a.log.Info("stopping", "reason", context.Cause(ctx))
	case r := <-failed:
		cause = fmt.Errorf("%s: %w", r.name, r.err)
		a.log.Error("component failed, stopping", "component", r.name, "err", r.err)
	}

	deadline := time.After(a.cfg.ShutdownTimeout)
	for i := len(all) - 1; i >= 0; i-- {
		r := all[i]
		r.cancel()
		select {
		case <-r.done:
			if r.err != nil && cause == nil && !errors.Is(r.err, context.Canceled) {
				a.log.Warn("component stopped with error", "component", r.name, "err", r.err)
			}
		case <-deadline:
			a.log.Error("shutdown timeout: components still running", "waiting_for", r.name, "timeout", a.cfg.ShutdownTimeout)
			return errors.Join(cause, fmt.Errorf("shutdown timed out after %s waiting for %s", a.cfg.ShutdownTimeout, r.name))
		}
	}
	stopMark()
	a.removeRunMark()
	a.log.Info("stopped")
	return cause
}

// Close releases what New opened (the database), in reverse order. Call it
// after Run returns.
func (a *App) Close() error {
	var errs []error
	for i := len(a.closers) - 1; i >= 0; i-- {
		errs = append(errs, a.closers[i]())
	}
	a.closers = nil
	return errors.Join(errs...)
}
