package hub

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"ledge/hub/store"
)

// Drop reasons counted by the hub (the store adds expired and quota).
const (
	dropNoRoute       = "no_route"
	dropTooLarge      = "too_large"
	dropMalformed     = "malformed"
	dropSlowClient    = "slow_client"
	dropSessionQuota  = "session_quota"
	dropReservedTopic = "reserved_topic"
)

type counters struct {
	received     atomic.Uint64 // telemetry and in-process publishes
	routed       atomic.Uint64
	delivered    atomic.Uint64 // to module inputs and upstream
	c2d          atomic.Uint64
	methods      atomic.Uint64
	authFailures atomic.Uint64

	mu    sync.Mutex // guards drops and the rate fields
	drops map[string]uint64
	last  rateSample
	rates Rates
}

type rateSample struct {
	at                             time.Time
	mqttIn, mqttOut, in, delivered uint64
}

// Rates are messages per second over the last second.
type Rates struct {
	MQTTIn    float64 `json:"mqttIn"`    // PUBLISH packets received by the broker
	MQTTOut   float64 `json:"mqttOut"`   // PUBLISH packets sent by the broker
	Routed    float64 `json:"routedIn"`  // telemetry and in-process messages taken in
	Delivered float64 `json:"delivered"` // routed messages delivered to inputs and upstream
}

func (c *counters) drop(reason string) {
	c.mu.Lock()
	if c.drops == nil {
		c.drops = map[string]uint64{}
	}
	c.drops[reason]++
	c.mu.Unlock()
}

func (c *counters) sample(h *Hub, now time.Time) {
	s := rateSample{at: now, mqttIn: uint64(atomic.LoadInt64(&h.srv.Info.MessagesReceived)),
		mqttOut: uint64(atomic.LoadInt64(&h.srv.Info.MessagesSent)), in: c.received.Load(), delivered: c.delivered.Load()}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.last.at.IsZero() {
		d := now.Sub(c.last.at).Seconds()
		c.rates = Rates{
			MQTTIn:    float64(s.mqttIn-c.last.mqttIn) / d,
			MQTTOut:   float64(s.mqttOut-c.last.mqttOut) / d,
			Routed:    float64(s.in-c.last.in) / d,
			Delivered: float64(s.delivered-c.last.delivered) / d,
		}
	}
	c.last = s
}

// Stats is a snapshot for the dashboard and /metrics.
type Stats struct {
	Hostname         string `json:"hostname"`
	Ports            Ports  `json:"ports"`
	ClientsConnected int64  `json:"clientsConnected"`
	// ConnectionsPending have not authenticated yet; ConnectionsEvicted
	// were closed to make room under hub.maxPendingConnections.
	ConnectionsPending int               `json:"connectionsPending"`
	ConnectionsEvicted uint64            `json:"connectionsEvicted"`
	Clients            []ClientInfo      `json:"clients"`
	MessagesReceived   uint64            `json:"messagesReceived"` // MQTT PUBLISH in
	MessagesSent       uint64            `json:"messagesSent"`     // MQTT PUBLISH out
	Routed             uint64            `json:"routed"`
	Delivered          uint64            `json:"delivered"`
	C2D                uint64            `json:"c2d"`
	Methods            uint64            `json:"methods"`
	AuthFailures       uint64            `json:"authFailures"`
	Rates              Rates             `json:"rates"`
	Drops              map[string]uint64 `json:"drops"` // by reason: no_route, too_large, malformed, slow_client, expired, quota
	Queues             []QueueStats      `json:"queues"`
	QueueBytes         int64             `json:"queueBytes"`
	QueueQuota         int64             `json:"queueQuotaBytes"`
	Upstream           UpstreamStatus    `json:"upstream"`
}

// QueueStats is one endpoint's queue and delivery.
type QueueStats struct {
	store.EndpointStats
	Delivered uint64        `json:"delivered"`
	Failures  uint64        `json:"failures"`
	Backoff   time.Duration `json:"backoff"`
	LastError string        `json:"lastError,omitempty"`
}

// ClientInfo is one connected client.
type ClientInfo struct {
	ID       string `json:"id"`
	Identity string `json:"identity,omitempty"`
	Kind     string `json:"kind,omitempty"`
	Auth     string `json:"auth,omitempty"`
	Remote   string `json:"remote"`
	Listener string `json:"listener"`
}

// Stats returns the counters, queues and upstream state.
func (h *Hub) Stats() Stats {
	st := Stats{
		Hostname:         h.hostname,
		Ports:            h.Ports(),
		ClientsConnected: atomic.LoadInt64(&h.srv.Info.ClientsConnected),
		MessagesReceived: uint64(atomic.LoadInt64(&h.srv.Info.MessagesReceived)),
		MessagesSent:     uint64(atomic.LoadInt64(&h.srv.Info.MessagesSent)),
		Routed:           h.stats.routed.Load(),
		Delivered:        h.stats.delivered.Load(),
		C2D:              h.stats.c2d.Load(),
		Methods:          h.stats.methods.Load(),
		AuthFailures:     h.stats.authFailures.Load(),
		Drops:            map[string]uint64{},
		Upstream:         h.up.status(),
	}
	st.ConnectionsPending, st.ConnectionsEvicted = h.pending.stats()
	h.stats.mu.Lock()
	st.Rates = h.stats.rates
	for k, v := range h.stats.drops {
		st.Drops[k] = v
	}
	h.stats.mu.Unlock()
	ss := h.store.Stats()
	for k, v := range ss.Drops {
		st.Drops[k] += uint64(v)
	}
	if n := atomic.LoadInt64(&h.srv.Info.InflightDropped); n > 0 {
		st.Drops[dropSessionQuota] = uint64(n) // a persistent session's queue was full
	}
	st.QueueBytes, st.QueueQuota = ss.Bytes, ss.QuotaBytes
	h.pumpsMu.Lock()
	pumps := make(map[string]PumpStats, len(h.pumps))
	for ep, p := range h.pumps {
		pumps[ep] = p.stats()
	}
	h.pumpsMu.Unlock()
	for _, es := range ss.Endpoints {
		p := pumps[es.Endpoint]
		st.Queues = append(st.Queues, QueueStats{EndpointStats: es, Delivered: p.Delivered, Failures: p.Failures, Backoff: p.Backoff, LastError: p.LastError})
	}
	h.sessions.Range(func(_, v any) bool {
		s := v.(*session)
		if s.cl.Closed() {
			return true // a persistent session whose client is away
		}
		st.Clients = append(st.Clients, ClientInfo{ID: s.cl.ID, Identity: s.name, Kind: s.kind, Auth: s.auth, Remote: s.cl.Net.Remote, Listener: s.cl.Net.Listener})
		return true
	})
	sort.Slice(st.Clients, func(i, j int) bool { return st.Clients[i].ID < st.Clients[j].ID })
	return st
}
