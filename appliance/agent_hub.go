package appliance

import (
	"context"
	"encoding/json"
	"maps"
	"time"

	"ledge/agent"
	"ledge/hub"
)

// The agent's seams onto the hub: module identities, desired twins, the
// upstream link, and the routes and storeAndForward sections of a
// deployment.

// hubIdentities implements agent.Identities.
type hubIdentities struct{ h *hub.Hub }

func (x hubIdentities) ModuleIdentity(ctx context.Context, module string) (agent.ModuleIdentity, error) {
	c, err := x.h.EnsureModule(ctx, module)
	if err != nil {
		return agent.ModuleIdentity{}, err
	}
	return agent.ModuleIdentity{
		DeviceID: c.DeviceID, ModuleID: c.ModuleID, GenerationID: c.GenerationID,
		Username: c.Username, Password: c.Password, SharedAccessKey: c.PrimaryKey,
	}, nil
}

func (x hubIdentities) RemoveModuleIdentity(ctx context.Context, module string) error {
	return x.h.RemoveModule(ctx, module)
}

func (x hubIdentities) Endpoint() agent.HubEndpoint {
	p := x.h.Ports()
	return agent.HubEndpoint{
		Hostname: x.h.Hostname(), IoTHubHostname: x.h.IoTHubHostname(),
		MQTTPort: p.MQTT, MQTTTLSPort: p.MQTTS, CAFile: x.h.CAPath(),
	}
}

// hubKeys implements workload.Keys: the agent's workload API signs with
// the modules' hub keys and issues certificates from the hub's CA.
type hubKeys struct{ h *hub.Hub }

func (x hubKeys) Sign(ctx context.Context, module, genID string, data []byte) ([]byte, error) {
	return x.h.ModuleSign(ctx, module, genID, data)
}

func (x hubKeys) TrustBundle() ([]byte, error) { return x.h.TrustBundle() }

func (x hubKeys) ServerCertificate(ctx context.Context, module, commonName string, notAfter time.Time) ([]byte, []byte, time.Time, error) {
	return x.h.ModuleServerCertificate(ctx, module, commonName, notAfter)
}

// hubParent implements agent.Parent over the hub's link to its parent.
type hubParent struct{ h *hub.Hub }

func (x hubParent) WatchDesired(modules []string, handler func(map[string]json.RawMessage)) (func(), error) {
	return x.h.WatchParentTwins(modules, handler)
}

func (x hubParent) ReportProperties(ctx context.Context, module string, patch json.RawMessage) error {
	return x.h.ReportParentTwin(ctx, module, patch)
}

// hubTwins implements agent.Twins.
type hubTwins struct{ h *hub.Hub }

func (x hubTwins) SetDesired(ctx context.Context, module string, desired json.RawMessage) error {
	return x.h.SetModuleDesired(ctx, module, desired)
}

// hubUpstream implements agent.Upstream over the hub's upstream bridge.
type hubUpstream struct{ h *hub.Hub }

func (x hubUpstream) Subscribe(topic string, handler func(payload []byte)) (func(), error) {
	return x.h.SubscribeUpstream(topic, 1, func(_ string, payload []byte) { handler(payload) })
}

func (x hubUpstream) Publish(ctx context.Context, topic string, payload []byte, retain bool) error {
	return x.h.PublishUpstream(ctx, topic, payload, 1, retain)
}

// routesSection owns a deployment's routes. The table in force is the
// routes of ledge.yaml (hub.routes) plus the deployment's, which win on a
// shared name; a deployment without routes leaves those of ledge.yaml.
type routesSection struct {
	h    *hub.Hub
	base map[string]hub.RouteConfig
}

func (s routesSection) table(raw json.RawMessage) (map[string]hub.RouteSpec, error) {
	dep, err := hub.RoutesFromJSON(raw)
	if err != nil {
		return nil, err
	}
	all := maps.Clone(s.base)
	if all == nil {
		all = map[string]hub.RouteConfig{}
	}
	maps.Copy(all, dep)
	return all, nil
}

func (s routesSection) Validate(_ context.Context, raw json.RawMessage) error {
	t, err := s.table(raw)
	if err != nil {
		return err
	}
	return s.h.ValidateRoutes(t)
}

func (s routesSection) Plan(_ context.Context, raw json.RawMessage) ([]agent.Change, error) {
	t, err := s.table(raw)
	if err != nil {
		return nil, err
	}
	plan, err := s.h.PlanRoutes(t)
	if err != nil {
		return nil, err
	}
	out := make([]agent.Change, 0, len(plan))
	for _, c := range plan {
		out = append(out, agent.Change{Kind: "route", Name: c.Name, Action: agent.Action(c.Action), Detail: c.Text})
	}
	return out, nil
}

func (s routesSection) Apply(_ context.Context, raw json.RawMessage) error {
	t, err := s.table(raw)
	if err != nil {
		return err
	}
	return s.h.SetRoutes(t)
}

// storeSection owns a deployment's storeAndForward settings; without them
// the settings of ledge.yaml apply.
type storeSection struct{ h *hub.Hub }

func (s storeSection) Validate(_ context.Context, raw json.RawMessage) error {
	_, err := hub.StoreSettingsFromJSON(raw)
	return err
}

func (s storeSection) Plan(_ context.Context, raw json.RawMessage) ([]agent.Change, error) {
	if _, err := hub.StoreSettingsFromJSON(raw); err != nil {
		return nil, err
	}
	return []agent.Change{{Kind: "storeAndForward", Name: "storeAndForward", Action: agent.ActionUpdate}}, nil
}

func (s storeSection) Apply(_ context.Context, raw json.RawMessage) error {
	st, err := hub.StoreSettingsFromJSON(raw)
	if err != nil {
		return err
	}
	return s.h.SetStoreAndForward(st)
}
