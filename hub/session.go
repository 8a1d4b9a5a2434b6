package hub

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// session is what the hub knows about one connected client: who it is and
// what it may touch. Created at CONNECT, immutable after, except pending.
type session struct {
	cl        *mqtt.Client
	name      string // identity name, "" when anonymous
	kind      string // device, module, user, or "" anonymous
	device    string
	module    string
	anonymous bool // dev mode on loopback: everything allowed
	auth      string
	counted   atomic.Bool // counted in Hub.perID while connected
	// quota is the identity whose hub.maxConnectionsPerIdentity this
	// connection counts against when not its own: a module without an
	// identity here counts against its device, whose key made it.
	quota    string
	present  atomic.Bool // counted in Hub.presence while connected
	expires  time.Time   // the SAS token's expiry (zero: none)
	expiry   atomic.Pointer[time.Timer]
	dropping atomic.Bool // a message for it was dropped (logged once)

	// Prefixes of the IoT Hub topics this client owns.
	pubPrefix string // devices/<d>[/modules/<m>]/messages/events
	subPrefix string // devices/<d>/messages/devicebound/ or devices/<d>/modules/<m>/
	// Plain topic grants, compiled from the ACL rules.
	pubFilters [][]string
	subFilters [][]string

	mu      sync.Mutex            // guards pending and closed
	pending map[uint16]pendingAck // packet id -> run on PUBACK or disconnect
	closed  bool
}

// canPublish: write access to a concrete topic.
func (s *session) canPublish(topic string) bool {
	if s.anonymous {
		return true
	}
	if strings.HasPrefix(topic, "$iothub/") {
		return s.kind == KindDevice || s.kind == KindModule
	}
	if strings.HasPrefix(topic, "devices/") {
		if s.pubPrefix == "" || !strings.HasPrefix(topic, s.pubPrefix) {
			return false
		}
		rest := topic[len(s.pubPrefix):]
		return rest == "" || rest[0] == '/'
	}
	return matchAny(s.pubFilters, topic)
}

// canRead: subscribe to a filter, or receive a concrete topic.
func (s *session) canRead(filter string) bool {
	if s.anonymous {
		return true
	}
	if strings.HasPrefix(filter, "$iothub/") {
		return s.kind == KindDevice || s.kind == KindModule
	}
	if strings.HasPrefix(filter, "devices/") {
		if s.subPrefix == "" {
			return false
		}
		return strings.HasPrefix(filter, s.subPrefix) || filter+"/" == s.subPrefix ||
			(strings.HasSuffix(filter, "/#") && filter[:len(filter)-1] == s.subPrefix)
	}
	return matchAny(s.subFilters, filter)
}

func matchAny(grants [][]string, topic string) bool {
	for _, g := range grants {
		if matchLevels(g, topic) {
			return true
		}
	}
	return false
}

// matchLevels matches topic against a granted filter split into levels. A
// subscription filter is checked the same way with its wildcards taken as
// literal levels, so only filters inside the grant pass.
func matchLevels(grant []string, topic string) bool {
	if strings.HasPrefix(topic, "$") && len(grant) > 0 && (grant[0] == "#" || grant[0] == "+") {
		return false
	}
	i := 0
	for {
		var level string
		var more bool
		if j := strings.IndexByte(topic, '/'); j >= 0 {
			level, topic, more = topic[:j], topic[j+1:], true
		} else {
			level = topic
		}
		if i >= len(grant) {
			return false
		}
		switch g := grant[i]; g {
		case "#":
			return true
		case "+":
		default:
			if g != level {
				return false
			}
		}
		i++
		if !more {
			return i == len(grant) || (i == len(grant)-1 && grant[i] == "#")
		}
	}
}

// compileGrants turns ACL rules into the grants of one identity.
func compileGrants(rules []ACLRule, name, kind string) (pub, sub [][]string) {
	for _, r := range rules {
		if len(r.Kinds) > 0 && !slices.Contains(r.Kinds, kind) {
			continue
		}
		if len(r.Identities) > 0 && !globAny(r.Identities, name) {
			continue
		}
		for _, f := range r.Publish {
			pub = append(pub, strings.Split(strings.ReplaceAll(f, "{id}", name), "/"))
		}
		for _, f := range r.Subscribe {
			sub = append(sub, strings.Split(strings.ReplaceAll(f, "{id}", name), "/"))
		}
	}
	return pub, sub
}

func globAny(globs []string, name string) bool {
	for _, g := range globs {
		if glob(g, name) {
			return true
		}
	}
	return false
}

// glob matches * (any run) and literal text.
func glob(pattern, s string) bool {
	star := strings.IndexByte(pattern, '*')
	if star < 0 {
		return pattern == s
	}
	if !strings.HasPrefix(s, pattern[:star]) {
		return false
	}
	rest := pattern[star+1:]
	for i := star; i <= len(s); i++ {
		if glob(rest, s[i:]) {
			return true
		}
	}
	return false
}

// quotaKey is the key of s's connection count in Hub.perID.
func (s *session) quotaKey() string {
	if s.quota != "" {
		return strings.ToLower(s.quota)
	}
	return strings.ToLower(s.name)
}

// hold makes s the holder of client id (held), and returns the session
// that held it before, if any. The client ids each identity holds are
// counted (heldCount).
func (h *Hub) hold(id string, s *session) (old *session, loaded bool) {
	h.heldMu.Lock()
	defer h.heldMu.Unlock()
	v, loaded := h.held.Swap(id, s)
	if loaded {
		old = v.(*session)
		h.unindexHeld(old, id)
	}
	if !s.anonymous {
		if h.heldBy == nil {
			h.heldBy = map[string]map[string]struct{}{}
		}
		k := s.quotaKey()
		if h.heldBy[k] == nil {
			h.heldBy[k] = map[string]struct{}{}
		}
		h.heldBy[k][id] = struct{}{}
	}
	return old, loaded
}

// release ends s's hold of client id, if s holds it.
func (h *Hub) release(id string, s *session) {
	h.heldMu.Lock()
	defer h.heldMu.Unlock()
	if h.held.CompareAndDelete(id, s) {
		h.unindexHeld(s, id)
	}
}

func (h *Hub) unindexHeld(s *session, id string) {
	k := s.quotaKey()
	if ids := h.heldBy[k]; ids != nil {
		delete(ids, id)
		if len(ids) == 0 {
			delete(h.heldBy, k)
		}
	}
}

// heldCount is how many client ids the identity of quota key k holds:
// connected, or persistent sessions kept while away.
func (h *Hub) heldCount(k string) int {
	h.heldMu.Lock()
	defer h.heldMu.Unlock()
	return len(h.heldBy[strings.ToLower(k)])
}
