package agent

import "sync/atomic"

// Stats are the agent's counters for /metrics (appliance turns them into
// Prometheus collectors). Safe to call at any time.
type Stats struct {
	EngineConnected bool
	// Modules counts modules by runtime status.
	Modules map[string]int
	// Restarts counts module restarts by the agent since start.
	Restarts int64
	// Applied, Rejected and RolledBack count deployments since start.
	Applied, Rejected, RolledBack int64
	// PulledBytes counts image bytes pulled since start.
	PulledBytes int64
	// EventsDropped counts events subscribers were too slow for.
	EventsDropped int64
}

// counters are updated where things happen.
type counters struct {
	restarts, applied, rejected, rolledBack, pulledBytes atomic.Int64
}

// Stats returns the counters now.
func (a *Agent) Stats() Stats {
	snap := a.rec.snapshot()
	s := Stats{EngineConnected: snap.connected, Modules: map[string]int{},
		Restarts: a.count.restarts.Load(), Applied: a.count.applied.Load(), Rejected: a.count.rejected.Load(),
		RolledBack: a.count.rolledBack.Load(), PulledBytes: a.count.pulledBytes.Load(), EventsDropped: a.bus.dropped()}
	for _, m := range snap.modules {
		s.Modules[m.RuntimeStatus]++
	}
	return s
}
