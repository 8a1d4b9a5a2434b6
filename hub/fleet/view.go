package fleet

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"
)

// View holds the fleet's retained messages as the broker sends them.
// Safe for concurrent use; [View.Snapshot] parses a consistent copy.
type View struct {
	topics Topics

	mu   sync.Mutex // guards the fields below
	raw  map[string][]byte
	seen map[string]time.Time // device -> last message about it
	// oversized are records over their kind's bound (maxRecord), not
	// kept: topic -> bytes.
	oversized map[string]int
	// epoch counts the connections' syncs; got is the epoch in which
	// each retained topic was last received (see prune).
	epoch int
	got   map[string]int
	// recv numbers the messages received; last is the number of the
	// last one received on each topic (see own).
	recv    uint64
	last    map[string]uint64
	up      bool
	changed chan struct{} // closed and replaced on every change
	msgs    int64
	bytes   int64
	sMsgs   int64
	sBytes  int64
	rbMsgs  int64 // of msgs and bytes: read back ([Conn.Check])
	rbBytes int64
}

func newView(t Topics) *View {
	return &View{topics: t, raw: map[string][]byte{}, seen: map[string]time.Time{}, got: map[string]int{}, oversized: map[string]int{},
		last: map[string]uint64{}, changed: make(chan struct{})}
}

// maxRecord bounds a retained record of each kind: what is kept in
// memory and parsed on every pass of a controller. A state document is a
// few hundred bytes; a device that publishes megabytes there is not
// taken (its topic shows in Snapshot.Oversized).
func maxRecord(kind string) int {
	switch kind {
	case "definition", "rollout":
		return MaxDefinitionSize
	case "state", "assignment":
		return 64 << 10
	}
	return 4 << 10 // online, lease, controller
}

// put takes a message; retained says it is a retained one the broker
// handed a subscription (not one published now).
func (v *View) put(topic string, payload []byte, retained bool) {
	kind, _ := v.topics.kind(topic)
	if kind == "" {
		return
	}
	v.mu.Lock()
	v.msgs++
	v.bytes += int64(len(payload) + len(topic))
	v.recv++
	v.last[topic] = v.recv
	v.store(topic, payload, retained)
}

// mark numbers the messages received so far: taken before a publish,
// for own.
func (v *View) mark() uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.recv
}

// own takes a message this connection published and the broker
// acknowledged, unless a message on its topic was received since mark
// (taken before the publish). The broker hands our subscription the
// messages of a topic in the order it takes them, our own among them: a
// message that came since is our copy, or one the broker took after ours
// (another controller's lease claim that replaced ours), which must not
// be overwritten, or one it took before ours, which our copy, still to
// come, replaces.
func (v *View) own(topic string, payload []byte, mark uint64) {
	kind, _ := v.topics.kind(topic)
	if kind == "" {
		return
	}
	v.mu.Lock()
	if v.last[topic] > mark {
		v.mu.Unlock()
		return
	}
	v.store(topic, payload, false)
}

// store keeps a message; called with v.mu held, it unlocks it.
func (v *View) store(topic string, payload []byte, retained bool) {
	kind, name := v.topics.kind(topic)
	delete(v.oversized, topic)
	if len(payload) > maxRecord(kind) {
		// Not kept: as if the topic held nothing readable.
		v.oversized[topic] = len(payload)
		if len(v.oversized) > 10000 { // bound the record of the refusals too
			clear(v.oversized)
			v.oversized[topic] = len(payload)
		}
		payload = nil
	}
	if len(payload) == 0 {
		delete(v.raw, topic)
		delete(v.got, topic)
	} else {
		v.raw[topic] = append([]byte(nil), payload...)
		v.got[topic] = v.epoch
	}
	// A device is seen now when it says something now, or when the
	// broker holds it online; a retained state or an offline presence
	// is as old as the device said it was (Snapshot reads its time).
	if (kind == "state" || kind == "online") && (!retained || kind == "online" && isOnline(payload)) {
		v.seen[name] = time.Now()
	}
	old := v.changed
	v.changed = make(chan struct{})
	v.mu.Unlock()
	close(old)
}

func (v *View) connected(up bool) {
	v.mu.Lock()
	v.up = up
	old := v.changed
	v.changed = make(chan struct{})
	v.mu.Unlock()
	close(old)
}

// resync starts a new connection's sync: what it receives from now on is
// what the broker holds.
func (v *View) resync() {
	v.mu.Lock()
	v.epoch++
	v.mu.Unlock()
}

// prune ends a sync that received every retained message the broker
// holds: what was not received again since resync was removed while the
// connection was down (a deployment deleted, a device gone, a lease
// given up while the broker restarted without it), and goes. Returns
// how many topics went.
func (v *View) prune() int {
	v.mu.Lock()
	n := 0
	for topic, e := range v.got {
		if e < v.epoch {
			delete(v.raw, topic)
			delete(v.got, topic)
			n++
		}
	}
	// The numbers of topics that hold nothing go (every topic ever
	// cleared would stay); only a publish acknowledged across a
	// reconnection could have needed one.
	maps.DeleteFunc(v.last, func(topic string, _ uint64) bool { return v.raw[topic] == nil })
	if n > 0 {
		devices := map[string]bool{}
		for topic := range v.raw {
			if kind, name := v.topics.kind(topic); kind == "state" || kind == "online" {
				devices[name] = true
			}
		}
		maps.DeleteFunc(v.seen, func(id string, _ time.Time) bool { return !devices[id] })
	}
	old := v.changed
	v.changed = make(chan struct{})
	v.mu.Unlock()
	close(old)
	return n
}

// Changed is closed at the next change.
func (v *View) Changed() <-chan struct{} {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.changed
}

func (v *View) sent(topic string, payload []byte) {
	v.mu.Lock()
	v.sMsgs++
	v.sBytes += int64(len(topic) + len(payload))
	v.mu.Unlock()
}

// readBack counts a message of msgs that a read-back asked for.
func (v *View) readBack(topic string, payload []byte) {
	if kind, _ := v.topics.kind(topic); kind == "" {
		return // not in msgs either
	}
	v.mu.Lock()
	v.rbMsgs++
	v.rbBytes += int64(len(topic) + len(payload))
	v.mu.Unlock()
}

// ReadBack counts the messages and bytes of Received that were read
// back ([Conn.Check]).
func (v *View) ReadBack() (msgs, bytes int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.rbMsgs, v.rbBytes
}

// Sent counts the messages and bytes (payload and topic) published.
func (v *View) Sent() (msgs, bytes int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.sMsgs, v.sBytes
}

// Received counts the messages and bytes (payload and topic) received.
func (v *View) Received() (msgs, bytes int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.msgs, v.bytes
}

// Device is one device as the fleet sees it.
type Device struct {
	ID string
	// Doc is the device's state document as published (what target
	// conditions are evaluated on); State is it parsed.
	Doc   []byte
	State *DeviceState
	// Online is the device's presence (false when it never said).
	Online bool
	// LastSeen is the last time the device said anything (its state's
	// time, or when a message about it arrived here).
	LastSeen   time.Time
	Assignment *Assignment
	// Refused says why its state document was not taken ("" if it was).
	Refused string
}

// Snapshot is the fleet at one moment: every device, definition (with
// those that failed their checks and why), rollout and the lease.
type Snapshot struct {
	Devices     map[string]*Device
	Definitions map[string]*Definition
	// Deleted are the deployments deleted (`ledge fleet delete`): their
	// signed tombstones, by name; not in Definitions.
	Deleted map[string]*Definition
	// Invalid are retained definitions refused (bad signature, bad
	// field, a replay), by name; Replayed names those refused because
	// their generation is below one seen before.
	Invalid  map[string]string
	Replayed map[string]bool
	// Payloads are the retained bytes of Definitions and Deleted, by name.
	Payloads    map[string][]byte
	Rollouts    map[string]*Rollout
	Lease       *Lease
	Controllers map[string]bool // controller id -> online
	Connected   bool
	// Oversized are retained records over their kind's bound, not kept:
	// topic -> bytes.
	Oversized map[string]int
	// Refused are state documents not taken, topic -> why: one whose
	// deviceId is not its topic's device (a device claiming another's id
	// to be given what targets that one).
	Refused map[string]string
}

// DeviceIDs lists the devices, sorted.
func (s *Snapshot) DeviceIDs() []string { return slices.Sorted(maps.Keys(s.Devices)) }

// Snapshot parses the view; definitions are verified with ver.
func (v *View) Snapshot(ver Verifier) *Snapshot {
	v.mu.Lock()
	raw := maps.Clone(v.raw)
	seen := maps.Clone(v.seen)
	oversized := maps.Clone(v.oversized)
	up := v.up
	v.mu.Unlock()
	s := &Snapshot{Devices: map[string]*Device{}, Definitions: map[string]*Definition{}, Deleted: map[string]*Definition{}, Invalid: map[string]string{},
		Replayed: map[string]bool{}, Payloads: map[string][]byte{}, Rollouts: map[string]*Rollout{}, Controllers: map[string]bool{}, Connected: up, Oversized: oversized, Refused: map[string]string{}}
	dev := func(id string) *Device {
		d := s.Devices[id]
		if d == nil {
			d = &Device{ID: id, LastSeen: seen[id]}
			s.Devices[id] = d
		}
		return d
	}
	for topic, payload := range raw {
		kind, name := v.topics.kind(topic)
		switch kind {
		case "state":
			if !ValidName(name) {
				continue
			}
			d := dev(name)
			var st DeviceState
			if json.Unmarshal(payload, &st) == nil && st.DeviceID != name {
				// The broker's ACL binds a device to its own topics, not
				// to what it writes in them: a target on deviceId must
				// not match a device that claims another's.
				s.Refused[topic] = fmt.Sprintf("its deviceId %q is not %q, the device of its topic", st.DeviceID, name)
				d.Refused = s.Refused[topic]
				continue
			}
			if json.Unmarshal(payload, &st) == nil {
				d.Doc, d.State = payload, &st
				if st.At.After(d.LastSeen) {
					d.LastSeen = st.At
				}
			}
		case "online":
			if !ValidName(name) {
				continue
			}
			var p Presence
			if json.Unmarshal(payload, &p) == nil {
				d := dev(name)
				d.Online = p.Online
				if p.Since.After(d.LastSeen) {
					d.LastSeen = p.Since
				}
			}
		case "assignment":
			var a Assignment
			if ValidName(name) && json.Unmarshal(payload, &a) == nil {
				dev(name).Assignment = &a
			}
		case "definition":
			if ver == nil {
				continue
			}
			d, _, err := Open(payload, ver, name)
			if err != nil {
				s.Invalid[name] = err.Error()
				continue
			}
			s.Payloads[name] = payload
			if d.State == StateDeleted {
				s.Deleted[name] = d
				continue
			}
			s.Definitions[name] = d
		case "rollout":
			var r Rollout
			if json.Unmarshal(payload, &r) == nil {
				s.Rollouts[name] = &r
			}
		case "lease":
			var l Lease
			if json.Unmarshal(payload, &l) == nil && l.Holder != "" {
				s.Lease = &l
			}
		case "controller":
			var p Presence
			if json.Unmarshal(payload, &p) == nil {
				s.Controllers[name] = p.Online
			}
		}
	}
	recorded := s.recordedGenerations()
	s.refuseOlder(func(name string) int64 { return recorded[name] })
	return s
}

// IsDeleted reports whether deployment name was deleted: its tombstone
// is retained, or (a replay of an older definition was put in the
// tombstone's place, and refused) no definition of it is in force and
// its rollout record says deleted.
func (s *Snapshot) IsDeleted(name string) bool {
	if s.Deleted[name] != nil {
		return true
	}
	r := s.Rollouts[name]
	return s.Definitions[name] == nil && r != nil && r.Phase == PhaseDeleted
}

func isOnline(payload []byte) bool {
	var p Presence
	return json.Unmarshal(payload, &p) == nil && p.Online
}
