package hub

import (
	"errors"
	"fmt"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"ledge/hub/azure"
	"ledge/hub/route"
	"ledge/hub/store"
)

// onIotHubPublish handles a PUBLISH on devices/... or $iothub/... (ACL
// already passed). It returns ErrRejectPacket so mochi neither acks nor
// fans the message out: the hub answers itself (a QoS 1 PUBACK after the
// message is committed to the queue).
func (h *Hub) onIotHubPublish(s *session, pk packets.Packet) (packets.Packet, error) {
	cl := s.cl
	if pk.FixedHeader.Qos > 1 {
		// IoT Hub closes the connection on QoS 2.
		h.srv.DisconnectClient(cl, packets.ErrQosNotSupported)
		return pk, packets.ErrRejectPacket
	}
	tp, err := azure.ParseTopic(pk.TopicName)
	if err != nil {
		h.stats.drop(dropMalformed)
		h.refuse(cl, pk, packets.ErrTopicNameInvalid, err.Error())
		return pk, packets.ErrRejectPacket
	}
	switch tp.Kind {
	case azure.Telemetry:
		h.onTelemetry(s, pk, tp)
	case azure.TwinGet:
		h.puback(cl, pk)
		h.twinGet(s, tp.RID)
	case azure.TwinPatchReported:
		h.puback(cl, pk)
		h.twinPatchReported(s, tp.RID, pk.Payload)
	case azure.MethodResponse:
		h.puback(cl, pk)
		h.methods.respond(s, tp.RID, tp.Status, pk.Payload)
	default:
		h.stats.drop(dropMalformed)
		h.refuse(cl, pk, packets.ErrTopicNameInvalid, "not an IoT Hub topic the hub serves: "+pk.TopicName)
	}
	return pk, packets.ErrRejectPacket
}

// refuse answers a publish the hub does not keep, never with a success
// ack: MQTT 5 QoS 1 or 2 gets a PUBACK (PUBREC) with the reason code and
// a reason string, and stays connected; anything else (MQTT 3.1.1, which
// has no negative PUBACK, or QoS 0, which has no ack) is disconnected,
// MQTT 5 with a DISCONNECT carrying the reason.
func (h *Hub) refuse(cl *mqtt.Client, pk packets.Packet, code packets.Code, why string) {
	if cl == nil {
		return
	}
	v5 := cl.Properties.ProtocolVersion == 5
	if v5 && pk.FixedHeader.Qos > 0 {
		typ := byte(packets.Puback)
		if pk.FixedHeader.Qos == 2 {
			typ = packets.Pubrec
		}
		cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: typ}, PacketID: pk.PacketID,
			ReasonCode: code.Code, Properties: packets.Properties{ReasonString: why}})
		return
	}
	// A 3.1.1 device refused (a full disk) reconnects and tries again,
	// several times a second: once a window per address and reason, the
	// others counted in the window's summary ("refusals not logged").
	if h.refusals.note(cl.Net.Remote, cl.ID, "publish refused: "+code.Reason, time.Now()) {
		h.log.Info("mqtt client disconnected: publish refused", "client", clip(cl.ID), "topic", clip(pk.TopicName), "reason", code.Reason, "detail", clip(why))
	}
	if v5 {
		h.srv.DisconnectClient(cl, code)
		return
	}
	cl.Stop(code)
}

// puback acknowledges a QoS 1 publish now.
func (h *Hub) puback(cl *mqtt.Client, pk packets.Packet) {
	if pk.FixedHeader.Qos != 1 {
		return
	}
	cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
}

func (h *Hub) onTelemetry(s *session, pk packets.Packet, tp azure.Topic) {
	h.onTelemetryMessage(s, pk, tp, "")
}

// onTelemetryMessage routes a telemetry message; messageType marks Wills.
func (h *Hub) onTelemetryMessage(s *session, pk packets.Packet, tp azure.Topic, messageType string) {
	h.stats.received.Add(1)
	if len(pk.Payload) > h.cfg.MaxMessageBytes {
		h.stats.drop(dropTooLarge)
		h.refuse(s.cl, pk, packets.ErrPacketTooLarge, fmt.Sprintf("payload %d bytes, over hub.maxMessageBytes %d", len(pk.Payload), h.cfg.MaxMessageBytes))
		return
	}
	app, sys, err := azure.ParseBag(tp.Bag)
	if err != nil {
		h.stats.drop(dropMalformed)
		h.refuse(s.cl, pk, packets.ErrTopicNameInvalid, err.Error())
		return
	}
	if sys == nil {
		sys = make(map[string]string, 2)
	}
	dev, mod := s.device, s.module
	if s.anonymous { // dev mode: trust the topic
		dev, mod = tp.Device, tp.Module
	}
	sys["connectionDeviceId"] = dev
	if mod != "" {
		sys["connectionModuleId"] = mod
	}
	if s.auth != "" {
		sys["connectionAuthMethod"] = s.auth
	}
	if messageType != "" {
		sys["iothub-MessageType"] = messageType
	}
	// A module's source names only the module, as edgeHub's does: only
	// this appliance's own modules have one. A module of another device
	// (a leaf device's key authenticates modules of its own, a child
	// ledge's relayed modules) is that device's telemetry, or a sensor
	// connected as "sensor/detector" would pass for the local detector
	// on every route written for it.
	source := "/messages"
	if mod != "" && strings.EqualFold(dev, h.deviceID) {
		source = "/messages/modules/" + mod
		if o := sys["outputName"]; o != "" {
			source += "/outputs/" + o
		}
	}
	if pk.FixedHeader.Retain {
		if app == nil {
			app = map[string]string{}
		}
		app["mqtt-retain"] = "true"
	}
	m := &route.Message{Source: source, Body: pk.Payload, App: app, Sys: sys}
	cl, id := s.cl, pk.PacketID
	var done func(error)
	if pk.FixedHeader.Qos == 1 {
		done = func(err error) {
			switch {
			case err == store.ErrTooLarge, errors.Is(err, store.ErrDiskFull):
				h.refuse(cl, pk, packets.ErrQuotaExceeded, err.Error())
			case err != nil:
				// Not persisted: no PUBACK; the client resends after reconnecting.
				cl.Stop(err)
			default:
				cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: id})
			}
		}
	}
	h.route(m, done)
}

// route matches m against the table and queues it once per endpoint; done
// (may be nil) runs once the queue committed it, or at once when no route
// matched.
func (h *Hub) route(m *route.Message, done func(error)) {
	ds := h.routes.Load().Match(m)
	if len(ds) == 0 {
		h.stats.drop(dropNoRoute)
		if done != nil {
			done(nil)
		}
		return
	}
	data := encodeMessage(m)
	def := h.defaults.Load()
	items := make([]store.Item, len(ds))
	pumps := make([]*pump, len(ds))
	for i, d := range ds {
		ttl := d.TTL
		if ttl == 0 {
			ttl = def.ttl
		}
		items[i] = store.Item{Endpoint: d.Sink.String(), Priority: d.Priority, TTL: ttl, Data: data}
		pumps[i] = h.ensurePump(d.Sink, true)
	}
	h.stats.routed.Add(1)
	h.store.Enqueue(items, func(err error) {
		for _, p := range pumps {
			p.queued.Add(-1)
		}
		if done != nil {
			done(err)
		}
	})
}

// sendTo writes a QoS 0 publish straight to one client.
func sendTo(cl *mqtt.Client, topic string, payload []byte) error {
	return cl.WritePacket(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish},
		TopicName:   topic,
		Payload:     payload,
		Created:     time.Now().Unix(),
	})
}

// sendQoS1 writes a QoS 1 publish to one client, tracked in its inflight
// set so mochi matches the PUBACK, which then runs onAck; onFail runs if
// the client goes away first.
func (s *session) sendQoS1(topic string, payload []byte, onAck, onFail func()) error {
	cl := s.cl
	id, err := cl.NextPacketID()
	if err != nil {
		return err
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   topic,
		Payload:     payload,
		PacketID:    uint16(id),
		Created:     time.Now().Unix(),
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return mqtt.ErrConnectionClosed
	}
	if s.pending == nil {
		s.pending = map[uint16]pendingAck{}
	}
	s.pending[uint16(id)] = pendingAck{onAck, onFail}
	s.mu.Unlock()
	cl.State.Inflight.Set(pk)
	cl.State.Inflight.DecreaseSendQuota()
	if err := cl.WritePacket(pk); err != nil {
		s.mu.Lock()
		_, mine := s.pending[uint16(id)]
		delete(s.pending, uint16(id))
		s.mu.Unlock()
		cl.State.Inflight.Delete(uint16(id))
		if mine {
			return err
		}
		return nil // failPending already ran onFail
	}
	return nil
}

type pendingAck struct{ ack, fail func() }

// ended reports whether the session's connection ended (OnDisconnect ran,
// or it was restored from the store without one).
func (s *session) ended() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *session) complete(id uint16) {
	s.mu.Lock()
	p, ok := s.pending[id]
	delete(s.pending, id)
	s.mu.Unlock()
	if ok && p.ack != nil {
		p.ack()
	}
}

// failPending runs at disconnect: messages in flight go back to their
// queues.
func (s *session) failPending() {
	s.mu.Lock()
	s.closed = true
	pend := s.pending
	s.pending = nil
	s.mu.Unlock()
	for id, p := range pend {
		s.cl.State.Inflight.Delete(id)
		if p.fail != nil {
			p.fail()
		}
	}
}
