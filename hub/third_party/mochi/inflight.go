// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co
// SPDX-FileContributor: mochi-co

package mqtt

import (
	"sort"
	"sync"
	"sync/atomic"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Inflight is a map of InflightMessage keyed on packet id.
type Inflight struct {
	sync.RWMutex
	internal            map[uint16]*packets.Packet // internal contains the inflight packets (from inflightPackets)
	order               map[uint16]uint64          // when each packet was first set, in set order
	next                uint64                     // the order given to the next new packet
	receiveQuota        int32                      // remaining inbound qos quota for flow control
	sendQuota           int32                      // remaining outbound qos quota for flow control
	maximumReceiveQuota int32                      // maximum allowed receive quota
	maximumSendQuota    int32                      // maximum allowed send quota
}

// inflightPackets holds the packets an Inflight no longer needs. A map of
// packets.Packet values (800 bytes, over the size a Go map keeps in its
// slots) put a new copy of each packet on the heap at every Set of a new
// packet id: 0.9 KB per QoS 1 or 2 message delivered, two thirds of what
// the server allocated for it. The map holds pointers now, each taken from
// here and given back, cleared, when its packet id is deleted.
var inflightPackets = sync.Pool{New: func() any { return new(packets.Packet) }}

// releaseInflight clears p (dropping its payload and properties) and gives
// it back to inflightPackets.
func releaseInflight(p *packets.Packet) {
	*p = packets.Packet{}
	inflightPackets.Put(p)
}

// NewInflights returns a new instance of an Inflight packets map.
func NewInflights() *Inflight {
	return &Inflight{
		internal: map[uint16]*packets.Packet{},
		order:    map[uint16]uint64{},
	}
}

// Set adds or updates an inflight packet by packet id.
func (i *Inflight) Set(m packets.Packet) bool {
	i.Lock()
	defer i.Unlock()

	p, ok := i.internal[m.PacketID]
	if !ok {
		p = inflightPackets.Get().(*packets.Packet)
		i.internal[m.PacketID] = p
	}
	*p = m
	if !ok {
		i.next++
		i.order[m.PacketID] = i.next
	}
	return !ok
}

// Get returns an inflight packet by packet id.
func (i *Inflight) Get(id uint16) (packets.Packet, bool) {
	i.RLock()
	defer i.RUnlock()

	if m, ok := i.internal[id]; ok {
		return *m, true
	}

	return packets.Packet{}, false
}

// Len returns the size of the inflight messages map.
func (i *Inflight) Len() int {
	i.RLock()
	defer i.RUnlock()
	return len(i.internal)
}

// Clone returns a new instance of Inflight with the same message data.
// This is used when transferring inflights from a taken-over session.
func (i *Inflight) Clone() *Inflight {
	c := NewInflights()
	i.RLock()
	defer i.RUnlock()
	for k, v := range i.internal {
		p := inflightPackets.Get().(*packets.Packet)
		*p = *v
		c.internal[k] = p // its own: a Delete on either clears only its copy
	}
	for k, v := range i.order {
		c.order[k] = v
	}
	c.next = i.next
	return c
}

// GetAll returns all the inflight messages, in the order they were first
// set (so a session's queued messages are resent in publish order).
func (i *Inflight) GetAll(immediate bool) []packets.Packet {
	i.RLock()
	defer i.RUnlock()

	m := []packets.Packet{}
	for _, v := range i.internal {
		if !immediate || (immediate && v.Expiry < 0) {
			m = append(m, *v)
		}
	}

	sort.Slice(m, func(a, b int) bool {
		return i.order[m[a].PacketID] < i.order[m[b].PacketID]
	})

	return m
}

// NextImmediate returns the next inflight packet which is indicated to be sent immediately.
// This typically occurs when the quota has been exhausted, and we need to wait until new quota
// is free to continue sending.
//
// It takes the read lock once (it took it again in GetAll: a writer waiting
// in between deadlocked both) and finds the first in set order without
// copying and sorting every held message (that was per acknowledgement).
func (i *Inflight) NextImmediate() (packets.Packet, bool) {
	i.RLock()
	defer i.RUnlock()

	var first packets.Packet
	var firstOrder uint64
	found := false
	for id, v := range i.internal {
		if v.Expiry >= 0 {
			continue
		}
		if o := i.order[id]; !found || o < firstOrder {
			first, firstOrder, found = *v, o, true
		}
	}
	return first, found
}

// clear forgets every message, telling no one (their session lives on in
// another client, see inheritClientSession).
func (i *Inflight) clear() {
	i.Lock()
	defer i.Unlock()
	for _, p := range i.internal {
		releaseInflight(p)
	}
	i.internal = map[uint16]*packets.Packet{}
	i.order = map[uint16]uint64{}
}

// Delete removes an in-flight message from the map. Returns true if the message existed.
func (i *Inflight) Delete(id uint16) bool {
	i.Lock()
	defer i.Unlock()

	p, ok := i.internal[id]
	if ok {
		delete(i.internal, id)
		releaseInflight(p)
	}
	delete(i.order, id)

	return ok
}

// TakeRecieveQuota reduces the receive quota by 1.
func (i *Inflight) DecreaseReceiveQuota() {
	if atomic.LoadInt32(&i.receiveQuota) > 0 {
		atomic.AddInt32(&i.receiveQuota, -1)
	}
}

// TakeRecieveQuota increases the receive quota by 1.
func (i *Inflight) IncreaseReceiveQuota() {
	if atomic.LoadInt32(&i.receiveQuota) < atomic.LoadInt32(&i.maximumReceiveQuota) {
		atomic.AddInt32(&i.receiveQuota, 1)
	}
}

// ResetReceiveQuota resets the receive quota to the maximum allowed value.
func (i *Inflight) ResetReceiveQuota(n int32) {
	atomic.StoreInt32(&i.receiveQuota, n)
	atomic.StoreInt32(&i.maximumReceiveQuota, n)
}

// DecreaseSendQuota reduces the send quota by 1.
func (i *Inflight) DecreaseSendQuota() {
	if atomic.LoadInt32(&i.sendQuota) > 0 {
		atomic.AddInt32(&i.sendQuota, -1)
	}
}

// IncreaseSendQuota increases the send quota by 1.
func (i *Inflight) IncreaseSendQuota() {
	if atomic.LoadInt32(&i.sendQuota) < atomic.LoadInt32(&i.maximumSendQuota) {
		atomic.AddInt32(&i.sendQuota, 1)
	}
}

// ResetSendQuota resets the send quota to the maximum allowed value.
func (i *Inflight) ResetSendQuota(n int32) {
	atomic.StoreInt32(&i.sendQuota, n)
	atomic.StoreInt32(&i.maximumSendQuota, n)
}
