package appliance

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"ledge/hub"
	"ledge/web"
)

// newHub builds the MQTT hub when enabled, registers it as a component
// (before web, which serves its API), with its health check and metrics,
// and returns what web needs from it (nil when disabled).
func (a *App) newHub(ctx context.Context) (*hubAdapter, http.Handler, error) {
	if !a.cfg.Hub.Enabled {
		return nil, nil, nil
	}
	h, err := hub.New(ctx, hub.Options{
		Config:   a.cfg.Hub,
		DB:       a.db,
		DataDir:  a.cfg.DataDir,
		DeviceID: a.cfg.DeviceID,
		Dev:      a.cfg.Dev,
		Logger:   a.log.With("component", "hub"),
	})
	if err != nil {
		return nil, nil, err
	}
	a.hub = h
	a.closers = append(a.closers, h.Close)
	a.add("hub", h.Run)
	a.health.add("hub", h.Healthy)
	a.registry.MustRegister(&hubCollector{h: h})
	return &hubAdapter{h}, h.WebSocketHandler(), nil
}

// Hub is the appliance's MQTT hub (nil when hub.enabled is false), for
// wiring other components (pipelines publish through it, the agent
// manages identities, routes and upstream with it).
func (a *App) Hub() *hub.Hub { return a.hub }

// hubAdapter gives web the hub through web's own interfaces (HubStatus,
// HubIdentities, HubTwins, HubMessages).
type hubAdapter struct{ h *hub.Hub }

func (x hubAdapter) Stats() web.HubStats { return webHubStats(x.h.Stats()) }
func (x hubAdapter) Identities() []web.HubIdentity {
	return each(x.h.Identities(), webIdentity)
}
func (x hubAdapter) AddIdentity(ctx context.Context, s web.HubIdentitySpec) (web.HubCreated, error) {
	c, err := x.h.AddIdentity(ctx, hub.IdentitySpec{Name: s.Name, Kind: s.Kind, Password: s.Password, Thumbprint: s.X509Thumbprint, X509CA: s.X509CA,
		Parent: s.Parent})
	return webCreated(c), err
}
func (x hubAdapter) ShowIdentity(name string) (web.HubCreated, error) {
	c, err := x.h.ShowIdentity(name)
	return webCreated(c), err
}
func (x hubAdapter) RemoveIdentity(ctx context.Context, name string) error {
	return x.h.RemoveIdentity(ctx, name)
}
func (x hubAdapter) GetTwin(ctx context.Context, name string) (web.HubTwin, error) {
	t, err := x.h.GetTwin(ctx, name)
	return webTwin(t), err
}
func (x hubAdapter) PatchDesired(ctx context.Context, name string, patch []byte) (web.HubTwin, error) {
	t, err := x.h.PatchDesired(ctx, name, patch)
	return webTwin(t), err
}
func (x hubAdapter) InvokeMethod(ctx context.Context, target, method string, payload json.RawMessage, timeout time.Duration) (int, json.RawMessage, error) {
	r, err := x.h.InvokeMethod(ctx, target, method, payload, timeout)
	return r.Status, r.Payload, err
}
func (x hubAdapter) SendC2D(ctx context.Context, device string, body []byte, props map[string]string) error {
	return x.h.SendC2D(ctx, device, body, props)
}

// hubCollector turns hub.Stats into Prometheus metrics at scrape time.
type hubCollector struct{ h *hub.Hub }

var (
	hubClients      = prometheus.NewDesc("ledge_hub_clients_connected", "MQTT clients connected to the hub.", nil, nil)
	hubReceived     = prometheus.NewDesc("ledge_hub_messages_received_total", "MQTT PUBLISH packets received by the hub.", nil, nil)
	hubSent         = prometheus.NewDesc("ledge_hub_messages_sent_total", "MQTT PUBLISH packets sent by the hub.", nil, nil)
	hubRouted       = prometheus.NewDesc("ledge_hub_routed_total", "Messages that matched a route and were queued.", nil, nil)
	hubDelivered    = prometheus.NewDesc("ledge_hub_delivered_total", "Routed messages delivered to module inputs and upstream.", nil, nil)
	hubAuthFailures = prometheus.NewDesc("ledge_hub_auth_failures_total", "Refused MQTT CONNECTs.", nil, nil)
	hubDrops        = prometheus.NewDesc("ledge_hub_dropped_total", "Messages dropped, by reason.", []string{"reason"}, nil)
	hubQueueDepth   = prometheus.NewDesc("ledge_hub_queue_depth", "Messages queued per endpoint (store-and-forward).", []string{"endpoint"}, nil)
	hubQueueBytes   = prometheus.NewDesc("ledge_hub_queue_bytes", "Bytes queued per endpoint.", []string{"endpoint"}, nil)
	hubQueueAge     = prometheus.NewDesc("ledge_hub_queue_oldest_age_seconds", "Age of the oldest queued message per endpoint.", []string{"endpoint"}, nil)
	hubUpstreamUp   = prometheus.NewDesc("ledge_hub_upstream_connected", "1 when the upstream bridge is connected.", []string{"mode"}, nil)
	hubPending      = prometheus.NewDesc("ledge_hub_connections_pending", "Connections that have not authenticated yet (bounded by hub.maxPendingConnections).", nil, nil)
	hubEvicted      = prometheus.NewDesc("ledge_hub_connections_evicted_total", "Unauthenticated connections closed to make room under hub.maxPendingConnections.", nil, nil)
)

func (c *hubCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{hubClients, hubReceived, hubSent, hubRouted, hubDelivered, hubAuthFailures, hubDrops,
		hubQueueDepth, hubQueueBytes, hubQueueAge, hubUpstreamUp, hubPending, hubEvicted} {
		ch <- d
	}
}

func (c *hubCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.h.Stats()
	ch <- prometheus.MustNewConstMetric(hubClients, prometheus.GaugeValue, float64(st.ClientsConnected))
	ch <- prometheus.MustNewConstMetric(hubReceived, prometheus.CounterValue, float64(st.MessagesReceived))
	ch <- prometheus.MustNewConstMetric(hubSent, prometheus.CounterValue, float64(st.MessagesSent))
	ch <- prometheus.MustNewConstMetric(hubRouted, prometheus.CounterValue, float64(st.Routed))
	ch <- prometheus.MustNewConstMetric(hubDelivered, prometheus.CounterValue, float64(st.Delivered))
	ch <- prometheus.MustNewConstMetric(hubAuthFailures, prometheus.CounterValue, float64(st.AuthFailures))
	ch <- prometheus.MustNewConstMetric(hubPending, prometheus.GaugeValue, float64(st.ConnectionsPending))
	ch <- prometheus.MustNewConstMetric(hubEvicted, prometheus.CounterValue, float64(st.ConnectionsEvicted))
	for _, r := range []string{"no_route", "too_large", "malformed", "slow_client", "expired", "quota", "disk_full", "session_quota"} {
		ch <- prometheus.MustNewConstMetric(hubDrops, prometheus.CounterValue, float64(st.Drops[r]), r)
	}
	for _, q := range st.Queues {
		ch <- prometheus.MustNewConstMetric(hubQueueDepth, prometheus.GaugeValue, float64(q.Depth), q.Endpoint)
		ch <- prometheus.MustNewConstMetric(hubQueueBytes, prometheus.GaugeValue, float64(q.Bytes), q.Endpoint)
		ch <- prometheus.MustNewConstMetric(hubQueueAge, prometheus.GaugeValue, q.OldestAge.Seconds(), q.Endpoint)
	}
	up := 0.0
	if st.Upstream.State == "connected" {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(hubUpstreamUp, prometheus.GaugeValue, up, st.Upstream.Mode)
}
