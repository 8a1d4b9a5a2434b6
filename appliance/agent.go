package appliance

import (
	"context"
	"maps"

	"github.com/prometheus/client_golang/prometheus"

	"ledge/agent"
	"ledge/web"
)

// newAgent builds the agent when agent.enabled, registers it to run
// (before web, which serves its API), its health check and its metrics,
// and returns what web needs of it (nil when disabled).
//
// With the hub, modules get hub identities, desired twins and routes, and
// deployments come from (and reported state goes to) the upstream broker.
// sections holds the owners of the other manifest sections (pipelines,
// models) built before the agent.
func (a *App) newAgent(ctx context.Context, sections map[string]agent.Section) (web.Deployer, error) {
	if !a.cfg.Agent.Enabled {
		return nil, nil
	}
	opts := agent.Options{
		Config:   a.cfg.Agent,
		DB:       a.db,
		Logger:   a.log.With("component", "agent"),
		DeviceID: a.cfg.DeviceID,
		DataDir:  a.cfg.DataDir,
		Build:    agent.VersionInfo{Version: a.build.Version, Commit: a.build.Commit},
		Sections: maps.Clone(sections),
	}
	if opts.Sections == nil {
		opts.Sections = map[string]agent.Section{}
	}
	if a.hub != nil {
		opts.Identities = hubIdentities{a.hub}
		opts.Twins = hubTwins{a.hub}
		if a.cfg.Hub.Upstream.Mode != "" {
			opts.Upstream = hubUpstream{a.hub} // deployments by MQTT only with an upstream broker
		}
		opts.Sections["routes"] = routesSection{h: a.hub, base: a.cfg.Hub.Routes}
		opts.Sections["storeAndForward"] = storeSection{a.hub}
	}
	ag, err := agent.New(ctx, opts)
	if err != nil {
		return nil, err
	}
	a.agent = ag
	a.closers = append(a.closers, ag.Close)
	a.add("agent", ag.Run)
	a.health.addSelfLogged("agent", ag.Healthy) // it logs the Docker engine going and coming
	registerAgentMetrics(a.registry, ag)
	return deployer{ag}, nil
}

// deployer adapts the agent to web.Deployer.
type deployer struct{ a *agent.Agent }

func (d deployer) Check(ctx context.Context, m, sig []byte) (any, error) {
	return d.a.Check(ctx, m, sig)
}
func (d deployer) Apply(ctx context.Context, m, sig []byte) (any, error) {
	return d.a.Apply(ctx, m, sig)
}
func (d deployer) Status(context.Context) (any, error) { return d.a.Reported(), nil }
func (d deployer) History(ctx context.Context, limit int) (any, error) {
	return d.a.History(ctx, limit)
}
func (d deployer) Rollback(ctx context.Context) (any, error) { return d.a.Rollback(ctx) }
func (d deployer) Manifest(ctx context.Context, id int64) (any, []byte, error) {
	dep, err := d.a.Deployment(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	return dep, dep.Manifest, nil
}
func (d deployer) Modules(context.Context) (any, error) { return d.a.Reported().Modules, nil }
func (d deployer) RestartModule(ctx context.Context, name string) error {
	return d.a.RestartModule(ctx, name)
}
func (d deployer) ModuleLogs(ctx context.Context, name string, tail int) ([]byte, error) {
	return d.a.ModuleLogs(ctx, name, tail)
}

// registerAgentMetrics exposes the agent's counters on /metrics.
func registerAgentMetrics(r *prometheus.Registry, ag *agent.Agent) {
	counter := func(name, help string, f func(agent.Stats) int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(f(ag.Stats())) })
	}
	r.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ledge_agent_engine_connected", Help: "1 when the Docker engine answers."},
			func() float64 {
				if ag.Stats().EngineConnected {
					return 1
				}
				return 0
			}),
		counter("ledge_agent_module_restarts_total", "Module restarts by the agent.", func(s agent.Stats) int64 { return s.Restarts }),
		counter("ledge_agent_deployments_applied_total", "Deployments accepted.", func(s agent.Stats) int64 { return s.Applied }),
		counter("ledge_agent_deployments_rejected_total", "Manifests refused.", func(s agent.Stats) int64 { return s.Rejected }),
		counter("ledge_agent_rollbacks_total", "Deployments rolled back.", func(s agent.Stats) int64 { return s.RolledBack }),
		counter("ledge_agent_pulled_bytes_total", "Image bytes pulled.", func(s agent.Stats) int64 { return s.PulledBytes }),
		counter("ledge_agent_events_dropped_total", "Events slow subscribers missed.", func(s agent.Stats) int64 { return s.EventsDropped }),
		&moduleCollector{ag: ag, desc: prometheus.NewDesc("ledge_agent_modules", "Modules by runtime status.", []string{"status"}, nil)},
	)
}

// moduleCollector reports the number of modules per runtime status.
type moduleCollector struct {
	ag   *agent.Agent
	desc *prometheus.Desc
}

func (c *moduleCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *moduleCollector) Collect(ch chan<- prometheus.Metric) {
	for _, status := range []string{agent.StatusRunning, agent.StatusBackoff, agent.StatusFailed, agent.StatusStopped, agent.StatusUnhealthy, agent.StatusUnknown} {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(c.ag.Stats().Modules[status]), status)
	}
}
