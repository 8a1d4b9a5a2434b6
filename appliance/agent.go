package appliance

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/url"

	"github.com/prometheus/client_golang/prometheus"

	"ledge/agent"
	"ledge/hub"
	"ledge/web"
)

// newAgent builds the agent when agent.enabled, registers it to run
// (before web, which serves its API), its health check and its metrics,
// and returns what web needs of it (nil when disabled): web.Deployments
// and web.Modules.
//
// With the hub, modules get hub identities, desired twins and routes, and
// deployments come from (and reported state goes to) the upstream broker.
// sections holds the owners of the other manifest sections (pipelines,
// models) built before the agent.
func (a *App) newAgent(ctx context.Context, sections map[string]agent.Section) (*deployer, error) {
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
		// $upstream images pull through the parent.
		ParentHost: a.cfg.ParentHost(),
		Sections:   maps.Clone(sections),
	}
	if opts.Sections == nil {
		opts.Sections = map[string]agent.Section{}
	}
	if a.hub != nil {
		opts.Identities = hubIdentities{a.hub}
		opts.Twins = hubTwins{a.hub}
		opts.Workload = hubKeys{a.hub} // Azure SDK modules sign through the workload API
		switch up := a.cfg.Hub.Upstream; {
		case up.Mode == "azure" && up.Relay:
			// A parent (IoT Hub or a parent ledge): deployments come from
			// this device's twins there, not from a topic IoT Hub has not.
			opts.Parent = hubParent{a.hub}
		case up.Mode != "":
			opts.Upstream = hubUpstream{a.hub} // deployments by MQTT only with an upstream broker
		}
		opts.Sections["routes"] = routesSection{h: a.hub, base: a.cfg.Hub.Routes}
		opts.Sections["storeAndForward"] = storeSection{a.hub}
	} else if a.cfg.Hub.Upstream.Mode == "mqtt" && a.cfg.Agent.Sources.MQTT.Enabled {
		up, err := a.newLink() // the hub is off: the upstream link alone
		if err != nil {
			return nil, err
		}
		opts.Upstream = up
	}
	ag, err := agent.New(ctx, opts)
	if err != nil {
		return nil, err
	}
	a.agent = ag
	a.closers = append(a.closers, ag.Close)
	a.add("agent", ag.Run)
	a.addFleetState(opts.Upstream)
	if a.models != nil {
		a.models.SetRegistryAuth(registryAuth(ag))
	}
	a.health.addSelfLogged("agent", ag.Healthy) // it logs the Docker engine going and coming
	registerAgentMetrics(a.registry, ag)
	if a.hub != nil {
		a.add("module-reach", a.warnModulesCannotReachHub)
	}
	return &deployer{a: ag, hub: a.hub, device: a.cfg.DeviceID}, nil
}

// warnModulesCannotReachHub logs once, when modules are deployed, that
// they cannot reach a hub listening on loopback only (the module reports
// say so too: hub.unreachable).
func (a *App) warnModulesCannotReachHub(ctx context.Context) error {
	events, cancel := a.agent.Events(4)
	defer cancel()
	warnOnceDeployed(ctx, events, func() int { return len(a.agent.Reported().Modules) }, func(n int) {
		if why := hubUnreachable(a.hub.Ports()); why != "" {
			a.log.Warn("container modules cannot reach the hub", "modules", n, "reason", why)
		}
	})
	return nil
}

// warnOnceDeployed calls warn once, with how many modules are deployed,
// as soon as there are any (it looks again after each agent event), and
// returns when ctx ends.
func warnOnceDeployed(ctx context.Context, events <-chan agent.Event, modules func() int, warn func(n int)) {
	for {
		if n := modules(); n > 0 {
			warn(n)
			<-ctx.Done()
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-events:
		}
	}
}

// deployer adapts the agent to web.Deployments and web.Modules. With the
// hub, each module's report says whether it is connected to the hub.
type deployer struct {
	a      *agent.Agent
	hub    *hub.Hub // nil without the hub
	device string
}

// modules converts the agent's module reports, joined with the hub's
// presence of each module's identity.
func (d deployer) modules(ms map[string]agent.ModuleReport) map[string]web.ModuleReport {
	out := eachValue(ms, webModule)
	if d.hub == nil {
		return out
	}
	unreachable := hubUnreachable(d.hub.Ports())
	for name, m := range out {
		id := d.device + "/" + name
		p := d.hub.Presence(id)
		m.Hub = &web.ModuleHubLink{Identity: id, Connected: p.Connected, Since: p.Since, Seen: p.Seen}
		if !p.Connected {
			m.Hub.Unreachable = unreachable
		}
		out[name] = m
	}
	return out
}

// hubUnreachable says why container modules cannot reach the hub: the
// listener they are given (MQTT over TLS, else plain MQTT) is bound to a
// loopback address, which a container on the module network cannot
// reach. "" when they can (or ledge cannot tell).
func hubUnreachable(p hub.Ports) string {
	addr, key := p.MQTTSAddr, "hub.listen.mqtts"
	if p.MQTTS == 0 {
		addr, key = p.MQTTAddr, "hub.listen.mqtt"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return ""
	}
	return fmt.Sprintf("the hub listens on %s only, which containers on the module network cannot reach: set %s in ledge.yaml to an address they reach (e.g. \":%s\")", addr, key, port)
}

func (d deployer) Check(ctx context.Context, m, sig []byte) (web.DeploymentPlan, error) {
	p, err := d.a.Check(ctx, m, sig)
	if err != nil {
		return web.DeploymentPlan{}, err
	}
	return webPlan(*p), nil
}
func (d deployer) Apply(ctx context.Context, m, sig []byte) (web.AppliedDeployment, error) {
	r, err := d.a.Apply(ctx, m, sig)
	if err != nil {
		return web.AppliedDeployment{}, err
	}
	out := web.AppliedDeployment{Deployment: webDeployment(r.Deployment)}
	if r.Plan != nil {
		p := webPlan(*r.Plan)
		out.Plan = &p
	}
	return out, nil
}
func (d deployer) Status(context.Context) (web.AgentReport, error) {
	r := d.a.Reported()
	out := webReport(*r)
	out.Modules = d.modules(r.Modules)
	return out, nil
}
func (d deployer) History(ctx context.Context, limit int) ([]web.Deployment, error) {
	h, err := d.a.History(ctx, limit)
	return each(h, webDeployment), err
}
func (d deployer) Rollback(ctx context.Context) (web.Deployment, error) {
	dep, err := d.a.Rollback(ctx)
	if err != nil {
		return web.Deployment{}, err
	}
	return webDeployment(*dep), nil
}
func (d deployer) Manifest(ctx context.Context, id int64) (web.Deployment, []byte, error) {
	dep, err := d.a.Deployment(ctx, id)
	if err != nil {
		return web.Deployment{}, nil, err
	}
	return webDeployment(*dep), dep.Manifest, nil
}
func (d deployer) Modules(context.Context) (map[string]web.ModuleReport, error) {
	return d.modules(d.a.Reported().Modules), nil
}
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

// ParentHost is the parent's host name in nested edge: hub.upstream.host,
// or the host of hub.upstream.url; "" without an upstream. "$upstream" in
// module images stands for it (unless agent.upstreamRegistry is set).
func (c Config) ParentHost() string {
	u := c.Hub.Upstream
	if u.Mode == "" {
		return ""
	}
	if u.Host != "" {
		return u.Host
	}
	if p, err := url.Parse(u.URL); err == nil {
		return p.Hostname()
	}
	return ""
}
