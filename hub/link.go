package hub

import (
	"context"
	"log/slog"
)

// Link is the upstream bridge alone, for an appliance whose hub is off
// (hub.enabled: false) but that still takes deployments from, and reports
// to, an upstream broker: the agent's MQTT source and the fleet's device
// state. It is the same client, options and reconnect policy as the
// hub's bridge; it carries no $upstream messages (there is no hub to
// route them).
type Link struct{ h *Hub }

// NewLink prepares the bridge of cfg (mode mqtt or azure) for deviceID;
// Run connects it.
func NewLink(cfg UpstreamConfig, deviceID string, log *slog.Logger) (*Link, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Hub{deviceID: deviceID, log: log}
	up, err := newUpstream(h, cfg)
	if err != nil {
		return nil, err
	}
	h.up = up
	return &Link{h: h}, nil
}

// Run keeps the link connected until ctx ends.
func (l *Link) Run(ctx context.Context) error {
	l.h.up.run(ctx)
	return nil
}

// Publish publishes on the upstream broker (see [Hub.PublishUpstream]).
func (l *Link) Publish(ctx context.Context, topic string, payload []byte, qos byte, retain bool) error {
	return l.h.PublishUpstream(ctx, topic, payload, qos, retain)
}

// Subscribe subscribes on the upstream broker, again after every
// reconnect (see [Hub.SubscribeUpstream]).
func (l *Link) Subscribe(filter string, qos byte, handler func(topic string, payload []byte)) (func(), error) {
	return l.h.SubscribeUpstream(filter, qos, handler)
}

// Status is the link's state.
func (l *Link) Status() UpstreamStatus { return l.h.up.status() }

// Connected reports whether the link is up.
func (l *Link) Connected() bool { return l.h.up.connected() }
