package hub

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"ledge/hub/azure"
	"ledge/hub/route"
	"ledge/hub/store"
)

// A pump delivers one endpoint's queue: to a module input over its MQTT
// connection, or upstream through the bridge. It keeps up to window
// messages in flight, acks them in the store as the receiver acks them,
// and backs off 1 s doubling to 60 s when delivery fails.
type pump struct {
	h        *Hub
	endpoint string
	sink     route.Sink
	window   int

	mu       sync.Mutex // guards inflight
	inflight int
	freed    chan struct{}

	// queued counts messages routed here and not yet committed to the
	// store: the pump is not pruned while it is above zero.
	queued atomic.Int64
	cancel context.CancelFunc // ends run; nil until started (h.pumpsMu)

	state pumpState
}

type pumpState struct {
	mu        sync.Mutex
	delivered uint64
	failures  uint64
	backoff   time.Duration
	lastError string
}

const (
	pumpWindow = 128
	minBackoff = time.Second
	maxBackoff = 60 * time.Second
)

// ensurePump starts the pump of sink's endpoint if it does not run, and
// counts one message on its way to the store (see pump.queued) when
// routing is true.
func (h *Hub) ensurePump(sink route.Sink, routing bool) *pump {
	ep := sink.String()
	h.pumpsMu.Lock()
	defer h.pumpsMu.Unlock()
	p, ok := h.pumps[ep]
	if !ok {
		p = &pump{h: h, endpoint: ep, sink: sink, window: pumpWindow, freed: make(chan struct{}, 1)}
		h.pumps[ep] = p
		if h.pumpCtx != nil {
			h.startPumpLocked(p)
		}
	}
	if routing {
		p.queued.Add(1)
	}
	return p
}

// startPumpLocked runs p under the pumps' context; h.pumpsMu held.
func (h *Hub) startPumpLocked(p *pump) {
	ctx, cancel := context.WithCancel(h.pumpCtx)
	p.cancel = cancel
	h.pumpWG.Go(func() { p.run(ctx) })
}

// startPumps starts pumps for what the store holds and the routes name.
func (h *Hub) startPumps(ctx context.Context) {
	for _, es := range h.store.Stats().Endpoints {
		if sink, ok := parseSink(es.Endpoint); ok {
			h.ensurePump(sink, false) // registered, not started: no context yet
		}
	}
	h.pumpsMu.Lock()
	h.pumpCtx = ctx // from now on ensurePump starts new pumps itself
	for _, p := range h.pumps {
		h.startPumpLocked(p)
	}
	h.pumpsMu.Unlock()
}

// prunePumps stops and forgets the pumps of endpoints that no route names
// any more once their queue is empty: nothing queued, in flight, or routed
// and on its way to the store. A route naming the endpoint again starts a
// new pump.
func (h *Hub) prunePumps() {
	named := map[string]bool{}
	for _, s := range h.routes.Load().Sinks() {
		named[s.String()] = true
	}
	h.pumpsMu.Lock()
	defer h.pumpsMu.Unlock()
	for ep, p := range h.pumps {
		if named[ep] || p.queued.Load() > 0 || !h.store.Forget(ep) {
			continue
		}
		if p.cancel != nil {
			p.cancel()
		}
		delete(h.pumps, ep)
	}
}

func parseSink(ep string) (route.Sink, bool) {
	if ep == "$upstream" {
		return route.Sink{Upstream: true}, true
	}
	p := strings.Split(strings.Trim(ep, "/"), "/")
	if len(p) != 4 {
		return route.Sink{}, false
	}
	return route.Sink{Module: p[1], Input: p[3]}, true
}

func (p *pump) run(ctx context.Context) {
	notify := p.h.store.Notify(p.endpoint)
	backoff := time.Duration(0)
	for {
		conn := p.h.connChanged()
		var upConn <-chan struct{}
		if p.sink.Upstream {
			upConn = p.h.up.changed()
		}
		progressed, err := p.deliver(ctx)
		var wait <-chan time.Time
		wake := notify
		switch {
		case err != nil:
			if backoff == 0 {
				backoff = minBackoff
			} else {
				backoff = min(2*backoff, maxBackoff)
			}
			p.state.mu.Lock()
			p.state.failures++
			p.state.backoff = backoff
			p.state.lastError = err.Error()
			p.state.mu.Unlock()
			wait = time.After(backoff)
			// Neither a reconnect nor new messages (a failed Next returns
			// its batch, which signals notify) cut the back-off short.
			conn, upConn, wake = nil, nil, nil
		case progressed:
			backoff = 0
			p.state.mu.Lock()
			p.state.backoff = 0
			p.state.mu.Unlock()
			continue
		}
		select {
		case <-ctx.Done():
			if p.sink.Upstream {
				p.h.store.NackAll(p.endpoint)
			}
			return
		case <-wake:
		case <-conn:
		case <-upConn:
		case <-p.freed:
		case <-wait:
		}
	}
}

// deliver sends what fits the window. It reports whether it sent
// anything; an error means the receiver failed and calls for back-off.
func (p *pump) deliver(ctx context.Context) (bool, error) {
	if p.sink.Upstream {
		return p.deliverUpstream(ctx)
	}
	return p.deliverInput(ctx)
}

func (p *pump) take(n int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	free := p.window - p.inflight
	if free < n {
		n = free
	}
	return n
}

func (p *pump) add(n int) {
	p.mu.Lock()
	p.inflight += n
	p.mu.Unlock()
}

func (p *pump) release() {
	p.mu.Lock()
	p.inflight--
	p.mu.Unlock()
	select {
	case p.freed <- struct{}{}:
	default:
	}
}

func (p *pump) count(n int) {
	p.state.mu.Lock()
	p.state.delivered += uint64(n)
	p.state.mu.Unlock()
	p.h.stats.delivered.Add(uint64(n))
}

// deliverInput sends to the module's connection, if it is connected and
// subscribed to the input.
func (p *pump) deliverInput(ctx context.Context) (bool, error) {
	id := p.h.deviceID + "/" + p.sink.Module
	v, ok := p.h.byID.Load(id)
	if !ok {
		return false, nil // waits for the module to connect
	}
	s := v.(*session)
	topicProbe := "devices/" + p.h.deviceID + "/modules/" + p.sink.Module + "/inputs/" + p.sink.Input + "/x"
	qos, subscribed := subscribedQoS(s, topicProbe)
	if !subscribed {
		return false, nil
	}
	n := p.take(p.window)
	if n <= 0 {
		return false, nil
	}
	entries, err := p.h.store.Next(ctx, p.endpoint, n)
	if err != nil || len(entries) == 0 {
		return false, err
	}
	for i, e := range entries {
		m, err := decodeMessage(e.Data)
		if err != nil {
			p.h.store.Ack(p.endpoint, e.Seq) // unreadable: drop, it would block the queue
			p.h.stats.drop(dropMalformed)
			continue
		}
		sys := map[string]string{"inputName": p.sink.Input}
		for k, v := range m.Sys {
			if k != "outputName" && k != "connectionAuthMethod" {
				sys[k] = v
			}
		}
		topic := azure.InputTopic(p.h.deviceID, p.sink.Module, p.sink.Input, m.App, sys)
		if qos == 0 {
			if err := sendTo(s.cl, topic, m.Body); err != nil {
				p.h.store.Nack(p.endpoint, seqs(entries[i:]))
				return i > 0, err
			}
			p.h.store.Ack(p.endpoint, e.Seq)
			p.count(1)
			continue
		}
		seq := e.Seq
		p.add(1)
		err = s.sendQoS1(topic, m.Body, func() {
			p.h.store.Ack(p.endpoint, seq)
			p.count(1)
			p.release()
		}, func() {
			p.h.store.Nack(p.endpoint, []int64{seq})
			p.release()
		})
		if err != nil {
			p.release()
			p.h.store.Nack(p.endpoint, seqs(entries[i:]))
			return i > 0, err
		}
	}
	return true, nil
}

func seqs(es []store.Entry) []int64 {
	out := make([]int64, len(es))
	for i, e := range es {
		out[i] = e.Seq
	}
	return out
}

// subscribedQoS finds the client's subscription covering topic.
func subscribedQoS(s *session, topic string) (byte, bool) {
	var qos byte
	found := false
	for filter, sub := range s.cl.State.Subscriptions.GetAll() {
		if matchLevels(strings.Split(filter, "/"), topic) {
			found = true
			qos = max(qos, sub.Qos)
		}
	}
	return min(qos, 1), found
}

// deliverUpstream sends a batch through the bridge and waits for its acks.
func (p *pump) deliverUpstream(ctx context.Context) (bool, error) {
	if !p.h.up.connected() {
		return false, nil
	}
	entries, err := p.h.store.Next(ctx, p.endpoint, 100)
	if err != nil || len(entries) == 0 {
		return false, err
	}
	acked, err := p.h.up.sendBatch(ctx, entries)
	if acked > 0 {
		s := make([]int64, acked)
		for i := range acked {
			s[i] = entries[i].Seq
		}
		p.h.store.Ack(p.endpoint, s...)
		p.count(acked)
	}
	if acked < len(entries) {
		p.h.store.Nack(p.endpoint, seqs(entries[acked:]))
	}
	return acked > 0, err
}

// PumpStats describes one endpoint's delivery.
type PumpStats struct {
	Endpoint  string        `json:"endpoint"`
	Delivered uint64        `json:"delivered"`
	Failures  uint64        `json:"failures"`
	Backoff   time.Duration `json:"backoff"`
	LastError string        `json:"lastError,omitempty"`
}

func (p *pump) stats() PumpStats {
	p.state.mu.Lock()
	defer p.state.mu.Unlock()
	return PumpStats{Endpoint: p.endpoint, Delivered: p.state.delivered, Failures: p.state.failures, Backoff: p.state.backoff, LastError: p.state.lastError}
}
