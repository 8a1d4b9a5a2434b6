package appliance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"ledge/agent"
	"ledge/hub"
	"ledge/hub/fleet"
)

// The device side of the fleet (docs/fleet.md): the appliance's tags and
// a compact reported state, retained on <prefix>/<deviceId>/state of its
// upstream broker, with a presence on <prefix>/<deviceId>/online that the
// broker's last will turns offline. The prefix is that of the agent's
// deployment topic (ledge/{device}/deployment: "ledge").

// fleetTopics derives the fleet's layout from the agent's deployment
// topic; ok is false when that topic is not <prefix>/{device}/deployment.
func fleetTopics(cfg agent.Config) (fleet.Topics, bool) {
	p, ok := strings.CutSuffix(cfg.Sources.MQTT.Topic, "/{device}/deployment")
	return fleet.Topics{Prefix: p}, ok && p != "" && !strings.Contains(p, "{")
}

// setPresence arms the upstream link's last will (before it is built):
// on a generic MQTT broker only (IoT Hub and a parent ledge speak the
// device API, where the fleet's topics are not).
func (c *Config) setPresence() {
	t, ok := fleetTopics(c.Agent)
	if c.Hub.Upstream.Mode != "mqtt" || !ok || !c.Agent.Enabled || !c.Agent.Sources.MQTT.Enabled {
		return
	}
	c.Hub.Upstream.Presence = &hub.UpstreamPresence{Topic: t.Online(c.DeviceID), Online: fleet.OnlinePayload, Offline: fleet.OfflinePayload}
}

// newLink is the agent's upstream when the hub is off: the bridge alone.
func (a *App) newLink() (agent.Upstream, error) {
	l, err := hub.NewLink(a.cfg.Hub.Upstream, a.cfg.DeviceID, a.log.With("component", "upstream"))
	if err != nil {
		return nil, err
	}
	a.add("upstream", l.Run)
	a.link = l
	return linkUpstream{l}, nil
}

// linkUpstream implements agent.Upstream over a hub.Link.
type linkUpstream struct{ l *hub.Link }

func (x linkUpstream) Subscribe(topic string, handler func(payload []byte)) (func(), error) {
	return x.l.Subscribe(topic, 1, func(_ string, payload []byte) { handler(payload) })
}

func (x linkUpstream) Publish(ctx context.Context, topic string, payload []byte, retain bool) error {
	return x.l.Publish(ctx, topic, payload, 1, retain)
}

// fleetState publishes the device's state for the fleet whenever it
// changes (checked every 2 s and on every agent event).
type fleetState struct {
	app   *App
	up    agent.Upstream
	topic string
}

func (a *App) addFleetState(up agent.Upstream) {
	t, ok := fleetTopics(a.cfg.Agent)
	if up == nil || a.cfg.Hub.Upstream.Mode != "mqtt" || !ok || !a.cfg.Agent.Sources.MQTT.Enabled {
		return
	}
	f := &fleetState{app: a, up: up, topic: t.State(a.cfg.DeviceID)}
	a.add("fleet-state", f.Run)
}

func (f *fleetState) Run(ctx context.Context) error {
	events, cancel := f.app.agent.Events(16)
	defer cancel()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	var last []byte
	var lastSent time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-events:
		case <-tick.C:
		}
		doc, err := json.Marshal(f.state(ctx))
		if err != nil {
			return fmt.Errorf("fleet state: %w", err)
		}
		// The time is in the document: compare without it, and publish
		// again at least every 10 minutes (last seen).
		cmp := stripAt(doc)
		if bytes.Equal(cmp, last) && time.Since(lastSent) < 10*time.Minute {
			continue
		}
		pctx, cancelP := context.WithTimeout(ctx, 5*time.Second)
		err = f.up.Publish(pctx, f.topic, doc, true)
		cancelP()
		if err == nil {
			last, lastSent = cmp, time.Now()
		}
	}
}

func stripAt(doc []byte) []byte {
	i := bytes.LastIndex(doc, []byte(`,"at":`))
	if i < 0 {
		return doc
	}
	return doc[:i]
}

// state is the device's document: tags, and what the agent and the model
// store report.
func (f *fleetState) state(ctx context.Context) *fleet.DeviceState {
	st := &fleet.DeviceState{DeviceID: f.app.cfg.DeviceID, Tags: f.app.cfg.Tags, At: time.Now().UTC().Truncate(time.Millisecond)}
	if st.Tags == nil {
		st.Tags = map[string]string{}
	}
	rep := f.app.agent.Reported()
	r := &st.Properties.Reported
	r.Ledge = rep.Version.Version
	if d := rep.Deployment; d != nil {
		r.Deployment = &fleet.DeployedState{Version: d.Version, Digest: d.Digest, State: d.State, Reason: d.Reason}
		if rb := d.RolledBackFrom; rb != nil {
			r.RolledBackFrom = &fleet.RolledBack{Version: rb.Version, Reason: rb.Reason}
		}
	}
	if rj := rep.Rejected; rj != nil {
		r.Rejected = &fleet.RejectedState{Version: rj.Version, Digest: rj.Digest, Reason: rj.Reason}
	}
	r.LastDesiredStatus = &fleet.Status{Code: rep.LastDesiredStatus.Code, Description: rep.LastDesiredStatus.Description}
	if len(rep.Modules) > 0 {
		r.Modules = map[string]string{}
		for name, m := range rep.Modules {
			r.Modules[name] = m.RuntimeStatus
		}
	}
	if !rep.Engine.Connected {
		r.Engine = "docker engine unreachable: " + rep.Engine.Error
	}
	if f.app.models != nil {
		if list, err := f.app.models.List(ctx); err == nil {
			for _, m := range list {
				if m.Active != "" {
					if r.Models == nil {
						r.Models = map[string]string{}
					}
					r.Models[m.Name] = m.Active
				}
			}
		}
	}
	return st
}
