package hub

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"ledge/hub/azure"
)

// hooks plugs ledge into mochi: authentication, ACL, the IoT Hub dialect
// and routing, and delivery acknowledgements.
type hooks struct {
	mqtt.HookBase
	h *Hub
}

func (k *hooks) ID() string { return "ledge" }

func (k *hooks) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish, mqtt.OnSessionEstablished,
		mqtt.OnSubscribed, mqtt.OnDisconnect, mqtt.OnQosComplete, mqtt.OnPublishDropped, mqtt.OnWill,
		mqtt.OnWillSent, mqtt.OnClientExpired:
		return true
	}
	return false
}

func (k *hooks) session(cl *mqtt.Client) *session { return k.h.sessionOf(cl) }

// sessionOf is the hub session of a mochi client: connected, or a
// persistent session whose client is away.
func (h *Hub) sessionOf(cl *mqtt.Client) *session {
	v, ok := h.sessions.Load(cl)
	if !ok {
		return nil
	}
	return v.(*session)
}

func (k *hooks) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	s, reason := k.h.authenticate(cl, pk)
	if s == nil {
		k.h.refuseConnect(slog.LevelInfo, cl, pk, reason)
		return false
	}
	// mochi publishes a Will without asking the ACL: its topic is checked
	// now, against the same rules as a PUBLISH.
	if pk.Connect.WillFlag && !s.canPublish(pk.Connect.WillTopic) {
		k.h.refuseConnect(slog.LevelInfo, cl, pk, "will topic not allowed: "+pk.Connect.WillTopic)
		cl.State.ConnectRefusal = packets.ErrNotAuthorized
		return false
	}
	// A client id belongs to the identity that holds it (connected, or a
	// persistent session kept for it): another identity may not take it
	// over and disconnect it.
	v, held := k.h.held.Load(pk.Connect.ClientIdentifier)
	if held {
		if o := v.(*session); !strings.EqualFold(o.name, s.name) || o.anonymous != s.anonymous {
			k.h.refuseConnect(slog.LevelInfo, cl, pk, "client id is held by another identity")
			cl.State.ConnectRefusal = packets.ErrNotAuthorized
			return false
		}
	}
	// Sessions kept while their client is away count too: a client that
	// picks a new id (or module name) each time kept any number of them,
	// each in memory for up to a day.
	if !s.anonymous && !held && k.h.heldCount(s.quotaKey()) >= k.h.cfg.MaxConnectionsPerIdentity {
		k.h.refuseConnect(slog.LevelWarn, cl, pk, "identity holds hub.maxConnectionsPerIdentity sessions, connected or kept for clients that are away (persistent sessions end after their expiry)",
			"identity", s.quotaKey(), "max", k.h.cfg.MaxConnectionsPerIdentity)
		cl.State.ConnectRefusal = packets.ErrQuotaExceeded
		return false
	}
	if !s.anonymous && !k.h.countConn(s, cl.ID) {
		k.h.refuseConnect(slog.LevelWarn, cl, pk, "identity holds hub.maxConnectionsPerIdentity connections",
			"identity", s.name, "max", k.h.cfg.MaxConnectionsPerIdentity)
		cl.State.ConnectRefusal = packets.ErrQuotaExceeded
		return false
	}
	s.cl = cl
	k.h.sessions.Store(cl, s)
	if cc, ok := cl.Net.Conn.(*coarseConn); ok {
		cc.authenticated()
	}
	return true
}

// refuseConnect counts a refused CONNECT and logs it, unless the same
// address was refused for the same reason in this window (refusalLog).
func (h *Hub) refuseConnect(level slog.Level, cl *mqtt.Client, pk packets.Packet, reason string, args ...any) {
	h.stats.authFailures.Add(1)
	if !h.refusals.note(cl.Net.Remote, pk.Connect.ClientIdentifier, reason, time.Now()) {
		return
	}
	h.log.Log(context.Background(), level, "mqtt connect refused",
		append([]any{"client", clip(pk.Connect.ClientIdentifier), "remote", cl.Net.Remote, "reason", clip(reason)}, args...)...)
}

// OnWill routes a Will sent on the client's telemetry topic as telemetry
// (with iothub-MessageType=Will, as IoT Hub does). mochi also hands it to
// subscribers of the topic, which the ACL leaves to none.
func (k *hooks) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	s := k.session(cl)
	if s == nil || !strings.HasPrefix(will.TopicName, "devices/") {
		return will, nil
	}
	tp, err := azure.ParseTopic(will.TopicName)
	if err != nil || tp.Kind != azure.Telemetry {
		return will, nil
	}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: will.TopicName, Payload: will.Payload}
	route := func() { k.h.onTelemetryMessage(s, pk, tp, "Will") }
	if willDelay(cl) > 0 {
		// mochi holds it for its delay; so does the route [MQTT-3.1.3-9].
		k.h.willsDue.Store(cl.ID, route)
		return will, nil
	}
	route()
	return will, nil
}

// willDelay is how long mochi holds a client's Will: its Will Delay, or
// the end of its session when that comes first (sendLWT).
func willDelay(cl *mqtt.Client) uint32 {
	d := cl.Properties.Will.WillDelayInterval
	if cl.Properties.ProtocolVersion == 5 && cl.Properties.Props.SessionExpiryInterval < d {
		d = cl.Properties.Props.SessionExpiryInterval
	}
	return d
}

// OnWillSent: mochi sent a Will held for its delay; route it too.
func (k *hooks) OnWillSent(cl *mqtt.Client, _ packets.Packet) { k.h.routeWillDue(cl.ID) }

// routeWillDue routes the Will held for id, if any, once.
func (h *Hub) routeWillDue(id string) {
	if route, ok := h.willsDue.LoadAndDelete(id); ok {
		route.(func())()
	}
}

func (k *hooks) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	k.h.willsDue.Delete(cl.ID) // back within the delay: mochi dropped the Will [MQTT-3.1.3-9]
	if s := k.session(cl); s != nil {
		k.h.byID.Store(cl.ID, s)
		if s.name != "" && s.present.CompareAndSwap(false, true) {
			k.h.presence.connect(s.name)
		}
		if !s.expires.IsZero() {
			k.h.expireAt(s)
		}
		// The session taken over (mochi moved its subscriptions and queue
		// here, or a clean start dropped them) is no longer held. One whose
		// connection has not ended yet (the client reconnected before the
		// hub read the end of its previous connection) is left to its
		// OnDisconnect, which fails its deliveries in flight back to their
		// queues and uncounts it: dropped here, its input messages stayed
		// in flight for good and the queue stalled.
		if old, ok := k.h.hold(cl.ID, s); ok && old != s && old.ended() {
			k.h.sessions.Delete(old.cl)
		}
	}
	k.h.signalConn()
}

func (k *hooks) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	k.h.signalConn()
}

func (k *hooks) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	s := k.session(cl)
	if s == nil {
		return
	}
	k.h.byID.CompareAndDelete(cl.ID, s)
	k.h.uncountConn(s)
	if s.present.CompareAndSwap(true, false) {
		k.h.presence.disconnect(s.name)
	}
	if t := s.expiry.Swap(nil); t != nil {
		t.Stop()
	}
	s.failPending()
	k.h.methods.dropClient(s)
	// A persistent session stays, with its grants: mochi checks them for
	// every message it queues for the session while the client is away.
	if expire || cl.IsTakenOver() || errors.Is(cl.StopCause(), packets.ErrSessionTakenOver) {
		k.h.sessions.Delete(cl)
		k.h.release(cl.ID, s)
	}
}

// OnClientExpired: a persistent session's expiry passed. A Will held for
// it is due now (the end of the session ends its delay), whether mochi's
// next sweep still finds the client or not.
func (k *hooks) OnClientExpired(cl *mqtt.Client) {
	k.h.routeWillDue(cl.ID)
	if s := k.session(cl); s != nil {
		k.h.sessions.Delete(cl)
		k.h.release(cl.ID, s)
	}
}

// OnQosComplete: a client acknowledged a message the hub sent it. mochi
// calls it too with its own PUBACK to a client's QoS 1 publish (built by
// mochi, so Created is set): the client's packet ids are its own, and its
// publish with id N says nothing about the hub's delivery N to it.
func (k *hooks) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if pk.FixedHeader.Type != packets.Puback || pk.Created != 0 {
		return
	}
	if s := k.session(cl); s != nil {
		s.complete(pk.PacketID)
	}
}

// OnPublishDropped: a message for a client was dropped, because its
// session already holds MaximumInflight (1024) unacknowledged messages
// (ReasonCode 0x97; counted by mochi as InflightDropped), or because the
// client does not read and its write queue (hub.maxPendingWrites) is full.
// Said once per connection (or per absence), as mosquitto does.
func (k *hooks) OnPublishDropped(cl *mqtt.Client, pk packets.Packet) {
	full := pk.ReasonCode == packets.ErrQuotaExceeded.Code
	if !full {
		k.h.stats.drop(dropSlowClient)
	}
	s := k.session(cl)
	if s == nil || !s.dropping.CompareAndSwap(false, true) {
		return
	}
	if full {
		k.h.log.Warn("messages for a client are dropped: its session holds 1024 unacknowledged messages (counted as session_quota)",
			"client", cl.ID, "identity", s.name, "connected", !cl.Closed())
		return
	}
	k.h.log.Warn("messages for a client are dropped: it does not read them (hub.maxPendingWrites queued; counted as slow_client)",
		"client", cl.ID, "identity", s.name, "maxPendingWrites", k.h.cfg.MaxPendingWrites)
}

func (k *hooks) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	s := k.session(cl)
	if s == nil {
		return false
	}
	if write {
		return s.canPublish(topic)
	}
	return s.canRead(topic)
}

func (k *hooks) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	t := pk.TopicName
	if !strings.HasPrefix(t, "devices/") && !strings.HasPrefix(t, "$iothub/") {
		if len(pk.Payload) > k.h.cfg.MaxMessageBytes { // plain MQTT, over the limit
			k.h.stats.drop(dropTooLarge)
			k.h.refuse(cl, pk, packets.ErrPacketTooLarge, fmt.Sprintf("payload %d bytes, over hub.maxMessageBytes %d", len(pk.Payload), k.h.cfg.MaxMessageBytes))
			return pk, packets.ErrRejectPacket
		}
		return pk, nil // plain MQTT
	}
	s := k.session(cl)
	if s == nil {
		return pk, packets.ErrRejectPacket
	}
	return k.h.onIotHubPublish(s, pk)
}

// authenticate decides a CONNECT. It returns the session, or nil and why
// (for the log; never the secret).
func (h *Hub) authenticate(cl *mqtt.Client, pk packets.Packet) (*session, string) {
	cid := pk.Connect.ClientIdentifier
	user := string(pk.Connect.Username)
	pass := pk.Connect.Password
	certs := peerCertificates(cl)
	switch {
	case bytes.HasPrefix(pass, []byte(azure.SASPrefix)):
		return h.authSAS(cid, user, string(pass))
	case len(pass) == 0 && len(certs) > 0:
		return h.authX509(cid, certs)
	case len(pass) > 0 && user != "":
		return h.authPassword(cl.Net.Remote, cid, user, pass)
	case len(pass) == 0 && user == "" && h.dev && isLoopback(cl.Net.Remote) && !fromForeignPage(cl):
		return &session{anonymous: true, device: cid}, ""
	}
	return nil, "no credentials"
}

func (h *Hub) authSAS(cid, user, pass string) (*session, string) {
	id := h.ids.get(cid)
	implicit := false
	if id == nil {
		id, implicit = h.implicitModule(cid), true
	}
	if id == nil || (id.Kind != KindDevice && id.Kind != KindModule) {
		return nil, "unknown identity"
	}
	if !id.Enabled {
		return nil, "identity disabled"
	}
	u, err := azure.ParseUsername(user)
	if err != nil {
		return nil, err.Error()
	}
	if !strings.EqualFold(u.Device, id.Device) || !strings.EqualFold(u.Module, id.Module) {
		return nil, "username names another identity than the client id"
	}
	if !h.knownHost(u.Host) {
		return nil, "username host " + u.Host + " is not this hub"
	}
	auth, expires, why := h.checkToken(id, pass)
	if why != "" {
		return nil, why
	}
	s := h.newSession(id, auth)
	s.expires = expires
	if implicit {
		s.quota = id.Device // its device's key made it: one key, one quota
	}
	return s, ""
}

// checkToken verifies a SAS token of identity id (enabled, a device or a
// module): its audience, expiry and signature. It returns how it was
// signed (the session's auth) and when it expires, or why it is refused.
func (h *Hub) checkToken(id *Identity, token string) (auth string, expires time.Time, why string) {
	tok, err := azure.ParseToken(token)
	if err != nil {
		return "", time.Time{}, err.Error()
	}
	if !tok.Expiry.After(time.Now()) {
		return "", time.Time{}, "token expired"
	}
	aud, err := azure.ParseResource(tok.Resource)
	if err != nil {
		return "", time.Time{}, err.Error()
	}
	if !h.knownHost(aud.Host) || !strings.EqualFold(aud.Device, id.Device) || !strings.EqualFold(aud.Module, id.Module) {
		return "", time.Time{}, "token audience is not this identity on this hub"
	}
	auth = "sas"
	switch keys, how, why := h.sasKeys(id, tok.KeyName); {
	case why != "":
		return "", time.Time{}, why
	case !tok.Verify(keys...):
		return "", time.Time{}, "token signature does not match the keys of " + how
	default:
		if how != "its own" {
			auth = "sas-" + how
		}
	}
	return auth, tok.Expiry, ""
}

// sasKeys are the keys a SAS token of identity id may be signed with,
// and whose they are:
//   - its own;
//   - for a module D/M of another device than this appliance's, device
//     D's too: an edge device holds its modules' identities (a child
//     ledge's $edgeAgent, $edgeHub and modules reach their twins here
//     with the device's key); this appliance's own modules have keys of
//     their own, and nothing else signs for them (see ownDevice);
//   - with skn=G (keyName), device G's, when G is id's parent: a child
//     ledge G connects on behalf of the devices behind it (IoT Hub's
//     parent scope, set with `ledge identity add DEVICE --parent G`).
func (h *Hub) sasKeys(id *Identity, keyName string) (keys [][]byte, how, why string) {
	if keyName != "" {
		g := h.ids.get(keyName)
		switch {
		case g == nil || g.Kind != KindDevice || !g.Enabled:
			return nil, "", "token key name " + keyName + " is not an enabled device on this hub"
		case id.Kind == KindDevice && strings.EqualFold(id.Parent, g.Name):
		case id.Kind == KindModule && strings.EqualFold(id.Device, g.Name) && !h.ownDevice(g.Name):
		default:
			return nil, "", "device " + g.Name + " may not connect on behalf of " + id.Name + " (it is not its parent)"
		}
		return [][]byte{g.primary, g.secondary}, "parent " + g.Name, ""
	}
	keys = [][]byte{id.primary, id.secondary}
	if id.Kind == KindModule && !h.ownDevice(id.Device) {
		if d := h.ids.get(id.Device); d != nil && d.Kind == KindDevice && d.Enabled {
			keys = append(keys, d.primary, d.secondary)
		}
	}
	return keys, "its own", ""
}

// ownDevice tells whether device is this appliance's own device id. A
// device identity of that name (a script sending the gateway's own
// readings) is a device like any other: its key is no master key of the
// appliance's modules, which the agent gives keys of their own.
func (h *Hub) ownDevice(device string) bool { return strings.EqualFold(device, h.deviceID) }

// implicitModule is module D/M of an existing device D that has no
// identity of its own on this hub: D's key authenticates it (see
// sasKeys), and it has a twin, as IoT Hub has for an edge device's
// $edgeAgent and $edgeHub.
func (h *Hub) implicitModule(name string) *Identity {
	dev, mod, ok := strings.Cut(name, "/")
	if !ok || !namePart.MatchString(mod) {
		return nil
	}
	d := h.ids.get(dev)
	if d == nil || d.Kind != KindDevice || !d.Enabled || len(d.primary) == 0 {
		return nil
	}
	return &Identity{Name: d.Name + "/" + mod, Kind: KindModule, Device: d.Device, Module: mod, Enabled: true, Created: d.Created}
}

func (h *Hub) knownHost(host string) bool {
	return strings.EqualFold(host, h.hostname) || strings.EqualFold(host, h.deviceID) ||
		(h.cfg.IoTHubHostname != "" && strings.EqualFold(host, h.cfg.IoTHubHostname))
}

func (h *Hub) authX509(cid string, certs []*x509.Certificate) (*session, string) {
	id := h.ids.get(cid)
	if id == nil || id.Kind != KindDevice || !id.Enabled {
		return nil, "unknown or disabled identity"
	}
	leaf := certs[0]
	if now := time.Now(); now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return nil, "client certificate not valid now"
	}
	if id.Thumbprint != "" {
		s256 := sha256.Sum256(leaf.Raw)
		s1 := sha1.Sum(leaf.Raw)
		if id.Thumbprint == hex.EncodeToString(s256[:]) || id.Thumbprint == hex.EncodeToString(s1[:]) {
			return h.newSession(id, "x509-thumbprint"), ""
		}
		return nil, "client certificate thumbprint does not match"
	}
	if id.X509CA {
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		_, err := leaf.Verify(x509.VerifyOptions{Roots: h.certs.caPool, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		if err != nil {
			return nil, "client certificate not signed by a trusted CA: " + err.Error()
		}
		if leaf.Subject.CommonName != id.Device {
			return nil, "client certificate CN is not the device id"
		}
		return h.newSession(id, "x509-ca"), ""
	}
	return nil, "identity does not use X.509"
}

func (h *Hub) authPassword(remote, cid, user string, pass []byte) (*session, string) {
	id := h.ids.get(user)
	if id != nil && id.Enabled && (id.Kind == KindModule || id.Kind == KindDevice) {
		if !strings.EqualFold(cid, id.Name) {
			return nil, "client id must be the identity name"
		}
		if mp := modulePassword(id); mp == "" || !hmacEqual(mp, string(pass)) {
			return nil, "wrong password"
		}
		return h.newSession(id, "password"), ""
	}
	if id != nil && id.Enabled {
		if o := h.ids.get(cid); o != nil && o.Kind != KindUser {
			return nil, "client id belongs to a device or module identity"
		}
	}
	if why := h.checkUserPassword(remote, user, id, pass); why != "" {
		return nil, why
	}
	return h.newSession(id, "password"), ""
}

// checkUserPassword checks the password of a plain MQTT user (id; nil
// or disabled when there is none by that name) within the guessing
// limits (guessLimiter), and returns why it is refused, or "".
func (h *Hub) checkUserPassword(remote, user string, id *Identity, pass []byte) string {
	g, key := h.guesses, guessKey(remote, user)
	if wait := g.locked(key, time.Now()); wait > 0 {
		return "too many wrong passwords for this user from this address: refused unchecked until its lockout ends (at most 5 min)"
	}
	valid := id != nil && id.Enabled && id.Kind == KindUser
	if valid && h.ids.passwordCached(id, pass) {
		g.succeeded(key)
		return ""
	}
	g.pending.Add(1)
	g.one <- struct{}{}
	defer func() { <-g.one; g.pending.Add(-1) }()
	wait, global := g.begin(key, time.Now())
	if wait > 0 {
		if global {
			if g.warnGlobal(true) {
				h.log.Warn("mqtt password guessing from many addresses: new user passwords are checked one every 3 s until it stops (passwords accepted before, SAS tokens and certificates are not affected)",
					"remote", remote, "user", clip(user))
			}
			return "too many wrong passwords on this hub: refused unchecked (one checked every 3 s)"
		}
		return "too many wrong passwords for this user from this address: refused unchecked until its lockout ends (at most 5 min)"
	}
	g.checked.Add(1)
	if valid && h.ids.checkPassword(id, pass) {
		g.succeeded(key)
		g.warnGlobal(false)
		return ""
	}
	if !valid {
		checkNoUser(pass)
	}
	if g.lockedOut(key) {
		h.log.Warn(fmt.Sprintf("mqtt password guessing: %d wrong passwords in a row; this user's passwords from this address are refused unchecked for %s (doubling up to %s)",
			guessFree, guessFirstLockout, guessMaxLockout), "remote", remote, "user", clip(user))
	}
	if !valid {
		return "unknown or disabled user"
	}
	return "wrong password"
}

func (h *Hub) newSession(id *Identity, auth string) *session {
	s := &session{name: id.Name, kind: id.Kind, device: id.Device, module: id.Module, auth: auth}
	switch id.Kind {
	case KindDevice:
		s.pubPrefix = "devices/" + id.Device + "/messages/events"
		s.subPrefix = "devices/" + id.Device + "/messages/devicebound/"
	case KindModule:
		s.pubPrefix = "devices/" + id.Device + "/modules/" + id.Module + "/messages/events"
		s.subPrefix = "devices/" + id.Device + "/modules/" + id.Module + "/"
	case KindUser:
		s.device = id.Name
	}
	s.pubFilters, s.subFilters = compileGrants(h.cfg.ACL, id.Name, id.Kind)
	return s
}

func peerCertificates(cl *mqtt.Client) []*x509.Certificate {
	tc, ok := unwrapTLS(cl.Net.Conn)
	if !ok {
		return nil
	}
	return tc.ConnectionState().PeerCertificates
}

// fromForeignPage reports whether a client is a WebSocket opened by a
// web page of another origin ([foreignPage]).
func fromForeignPage(cl *mqtt.Client) bool {
	cc, ok := cl.Net.Conn.(*coarseConn)
	if !ok {
		return false
	}
	ws, ok := cc.Conn.(*wsConn)
	return ok && ws.page
}

func isLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func hmacEqual(a, b string) bool {
	x := sha256.Sum256([]byte(a))
	y := sha256.Sum256([]byte(b))
	return x == y
}

// countConn counts a new connection of s's identity, refusing it when the
// identity holds its maximum already (a connection taking over the same
// client id replaces one, so it always fits).
func (h *Hub) countConn(s *session, clientID string) bool {
	v, _ := h.perID.LoadOrStore(s.quotaKey(), new(atomic.Int64))
	n := v.(*atomic.Int64)
	if n.Add(1) > int64(h.cfg.MaxConnectionsPerIdentity) && !h.replacesCounted(s, clientID) {
		n.Add(-1)
		return false
	}
	s.counted.Store(true)
	return true
}

// replacesCounted reports whether a connection of s's identity with
// clientID takes over a counted connection of the same identity. It asks
// mochi's client list, not byID: mochi sends the CONNACK before
// OnSessionEstablished puts a client in byID, so a client that reconnects
// at once would not find itself there yet.
func (h *Hub) replacesCounted(s *session, clientID string) bool {
	cl, ok := h.srv.Clients.Get(clientID)
	if !ok {
		return false
	}
	o := h.sessionOf(cl)
	return o != nil && o.counted.Load() && strings.EqualFold(o.name, s.name)
}

func (h *Hub) uncountConn(s *session) {
	if !s.counted.CompareAndSwap(true, false) {
		return
	}
	if v, ok := h.perID.Load(s.quotaKey()); ok {
		v.(*atomic.Int64).Add(-1)
	}
}

// expireAt disconnects a client authenticated with a SAS token when the
// token expires, as IoT Hub does; the SDKs renew their token and
// reconnect. MQTT 5 clients get a DISCONNECT saying why.
func (h *Hub) expireAt(s *session) {
	t := time.AfterFunc(time.Until(s.expires), func() {
		cl := s.cl
		if cl.Closed() {
			return
		}
		h.log.Info("mqtt client disconnected: its SAS token expired", "client", cl.ID, "expired", s.expires)
		if cl.Properties.ProtocolVersion == 5 {
			h.srv.DisconnectClient(cl, packets.Code{Code: packets.ErrNotAuthorized.Code, Reason: "SAS token expired"})
			return
		}
		cl.Stop(errors.New("SAS token expired"))
	})
	s.expiry.Store(t)
}
