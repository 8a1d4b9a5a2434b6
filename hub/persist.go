package hub

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
)

// sessionStore keeps what mochi holds for persistent MQTT sessions (MQTT
// 3.1.1 clean session 0, or MQTT 5 with a session expiry) in SQLite, so a
// session survives a restart of the hub: the session with the identity
// that holds it (hub_sessions), its subscriptions (hub_session_subs), the
// QoS 1 and 2 messages queued or in flight for it (hub_session_msgs, in
// the order they were queued), and retained messages (hub_retained).
// Clean sessions are never written.
//
// Writes go through one goroutine that commits everything pending in one
// transaction. A QoS 1 or 2 message published to a plain topic that a
// persistent session takes is acknowledged to its publisher only after
// the session's copy is committed (OnPublished waits; mochi, as patched in
// third_party, acknowledges after OnPublished), so an acknowledged message
// survives kill -9.
//
// Concurrency: the hooks run on the clients' goroutines; ops are queued in
// ticket order under sendMu; mu guards the commit state.
type sessionStore struct {
	mqtt.HookBase
	h   *Hub
	db  *sql.DB
	log *slog.Logger

	sendMu  sync.Mutex // orders tickets with the channel
	enq     uint64     // last ticket handed out
	closed  bool
	ops     chan sop
	stop    chan struct{}
	stopped chan struct{}

	mu        sync.Mutex    // guards the fields below
	committed uint64        // every ticket up to this one is committed
	failed    uint64        // tickets up to this one failed to commit (their publishers were not acked)
	lastErr   error         // the last commit's error while no commit has succeeded since
	gen       chan struct{} // closed after each commit attempt
	lastLog   time.Time

	persistent sync.Map      // client id -> struct{}: ids with rows
	stored     sync.Map      // msgKey -> bool: messages with rows; true: stored as never sent
	rcvd       sync.Map      // msgKey -> struct{}: the client's PUBREC'd QoS 2 ids with rows
	subs       sync.Map      // subKey -> string: the subscriptions' rows as stored
	waits      sync.Map      // publisher client id -> ticket its ack waits for
	nwaits     atomic.Int64  // entries in waits
	loading    atomic.Bool   // mochi is loading stored sessions
	loaded     sync.Map      // client id -> sessionOwner, while loading
	ending     sync.Map      // client id -> *mqtt.Client: its clean start is ending the stored session
	dropCount  atomic.Uint64 // messages for sessions that could not be stored
}

// sessionOwner is who holds a stored session.
type sessionOwner struct {
	Identity  string `json:"identity"`
	Auth      string `json:"auth"`
	Anonymous bool   `json:"anonymous,omitempty"`
}

type sopKind int

const (
	sopClient sopKind = iota
	sopForget         // the session and all it holds
	sopSub
	sopUnsub
	sopMsg
	sopMsgDone
	sopRetain
	sopUnretain
	sopRcvd     // the client's QoS 2 publish was PUBREC'd
	sopRcvdDone // ... and PUBREL'd
)

type sop struct {
	kind   sopKind
	ticket uint64
	client string
	key    string // filter, topic
	id     uint16 // packet id
	data   []byte
}

func newSessionStore(h *Hub) *sessionStore {
	return &sessionStore{h: h, db: h.db, log: h.log.With("part", "sessions"), ops: make(chan sop, 4096),
		stop: make(chan struct{}), stopped: make(chan struct{}), gen: make(chan struct{})}
}

func (s *sessionStore) ID() string { return "ledge-sessions" }

func (s *sessionStore) Provides(b byte) bool {
	switch b {
	case mqtt.OnSessionEstablish, mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnSubscribed, mqtt.OnUnsubscribed,
		mqtt.OnRetainMessage, mqtt.OnRetainedExpired, mqtt.OnQosPublish, mqtt.OnQosComplete, mqtt.OnQosDropped,
		mqtt.OnClientExpired, mqtt.OnPublished,
		mqtt.StoredClients, mqtt.StoredSubscriptions, mqtt.StoredInflightMessages, mqtt.StoredRetainedMessages:
		return true
	}
	return false
}

// persistentSession: the client asked for a session that outlives its
// connection.
func persistentSession(cl *mqtt.Client) bool {
	if cl.Properties.ProtocolVersion == 5 {
		return cl.Properties.Props.SessionExpiryInterval > 0
	}
	return !cl.Properties.Clean
}

func (s *sessionStore) known(id string) bool {
	_, ok := s.persistent.Load(id)
	return ok
}

// send queues an op and returns its ticket (0 once stopped).
func (s *sessionStore) send(o sop) uint64 {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.closed {
		return 0
	}
	s.enq++
	o.ticket = s.enq
	s.ops <- o
	return o.ticket
}

// OnSessionEstablish: a clean start (MQTT 5 Clean Start, 3.1.1 clean
// session) ends the client's stored session, and mochi sends the CONNACK
// after this hook: it waits for the removal's commit, so a kill -9 right
// after the CONNACK cannot bring the old session back (session present,
// its subscriptions, the messages queued for it), as it did when the
// removal was queued after the CONNACK. Until the new connection's
// session is established, what its old connection still does (a message
// queued for it as mochi discards it, a subscription) is not written
// (ended). A commit that fails closes the new connection instead, so it
// is never told its old session is gone while it is still stored.
func (s *sessionStore) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	if !pk.Connect.Clean || !s.known(cl.ID) {
		s.ending.Delete(cl.ID) // from a clean start whose CONNACK failed
		return
	}
	s.ending.Store(cl.ID, cl)
	if err := s.wait(s.forget(cl.ID), 10*time.Second); err != nil {
		s.h.log.Warn("mqtt CONNECT with clean start not acknowledged: the old persistent session's removal was not stored", "client", cl.ID, "err", err)
		cl.Stop(err)
	}
}

// ended: cl is the old connection of a client id whose clean start is
// ending its stored session: nothing of it is written any more.
func (s *sessionStore) ended(cl *mqtt.Client) bool {
	v, ok := s.ending.Load(cl.ID)
	return ok && v.(*mqtt.Client) != cl
}

func (s *sessionStore) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	s.ending.CompareAndDelete(cl.ID, cl)
	if !persistentSession(cl) {
		if s.known(cl.ID) {
			s.forget(cl.ID) // a clean start ends the old session
		}
		return
	}
	sess := s.h.sessionOf(cl)
	if sess == nil {
		return
	}
	owner := sessionOwner{Identity: sess.name, Auth: sess.auth, Anonymous: sess.anonymous}
	props := cl.Properties.Props.Copy(false)
	c := storage.Client{ID: cl.ID, T: storage.ClientKey, Remote: cl.Net.Remote, Listener: cl.Net.Listener,
		Username: cl.Properties.Username, Clean: cl.Properties.Clean, ProtocolVersion: cl.Properties.ProtocolVersion,
		Properties: storage.ClientProperties{SessionExpiryInterval: props.SessionExpiryInterval,
			SessionExpiryIntervalFlag: props.SessionExpiryIntervalFlag, ReceiveMaximum: props.ReceiveMaximum,
			TopicAliasMaximum: props.TopicAliasMaximum, User: props.User, MaximumPacketSize: props.MaximumPacketSize,
			RequestProblemInfo: props.RequestProblemInfo, RequestProblemInfoFlag: props.RequestProblemInfoFlag,
			RequestResponseInfo: props.RequestResponseInfo},
		Will: storage.ClientWill(cl.Properties.Will)}
	data, _ := json.Marshal(struct {
		Client storage.Client `json:"client"`
		Owner  sessionOwner   `json:"owner"`
	}{c, owner})
	s.persistent.Store(cl.ID, struct{}{})
	s.send(sop{kind: sopClient, client: cl.ID, data: data})
}

func (s *sessionStore) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	if s.loading.Load() {
		s.attachLoaded(cl, expire)
		return
	}
	if expire && !errors.Is(cl.StopCause(), packets.ErrSessionTakenOver) && !cl.IsTakenOver() && s.known(cl.ID) {
		s.forget(cl.ID)
	}
}

func (s *sessionStore) OnClientExpired(cl *mqtt.Client) {
	if s.known(cl.ID) {
		s.forget(cl.ID)
	}
}

// forget removes a session and all it holds; it returns the removal's
// ticket (0 once stopped).
func (s *sessionStore) forget(id string) uint64 {
	s.persistent.Delete(id)
	for _, m := range []*sync.Map{&s.stored, &s.rcvd} {
		m.Range(func(k, _ any) bool {
			if k.(msgKey).client == id {
				m.Delete(k)
			}
			return true
		})
	}
	s.subs.Range(func(k, _ any) bool {
		if k.(subKey).client == id {
			s.subs.Delete(k)
		}
		return true
	})
	return s.send(sop{kind: sopForget, client: id})
}

// subKey names a stored subscription.
type subKey struct{ client, filter string }

// OnSubscribed stores a persistent session's subscriptions; mochi sends
// the SUBACK after this hook, so it waits for the commit: a subscription
// acknowledged survives kill -9 (with the session itself, committed
// before it), and messages published after the SUBACK are kept for the
// session. A subscription stored as it is asked again (a client that
// subscribes at every connect, as mosquitto_sub -c does) is not written
// and its SUBACK does not wait: while the hub waits it reads nothing, and
// a client that acknowledges a message and leaves meanwhile would have
// its PUBACK discarded with the connection, and the message sent again
// at its next connect.
func (s *sessionStore) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	if !persistentSession(cl) || s.ended(cl) {
		return
	}
	var t uint64
	var written []subKey
	for i, f := range pk.Filters {
		if i >= len(codes) || codes[i] >= 0x80 {
			continue
		}
		data, _ := json.Marshal(storage.Subscription{T: storage.SubscriptionKey, Client: cl.ID, Filter: f.Filter, Qos: codes[i],
			Identifier: f.Identifier, NoLocal: f.NoLocal, RetainHandling: f.RetainHandling, RetainAsPublished: f.RetainAsPublished})
		if prev, ok := s.subs.Swap(subKey{cl.ID, f.Filter}, string(data)); ok && prev.(string) == string(data) {
			continue
		}
		t = s.send(sop{kind: sopSub, client: cl.ID, key: f.Filter, data: data})
		written = append(written, subKey{cl.ID, f.Filter})
	}
	if err := s.ackAfter(cl, t, "SUBSCRIBE"); err != nil {
		for _, k := range written {
			s.subs.Delete(k) // not known to be stored: asked again, it waits again
		}
	}
}

// OnUnsubscribed: the UNSUBACK waits for the commit too, so a filter
// removed stays removed.
func (s *sessionStore) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	if !s.known(cl.ID) || s.ended(cl) {
		return
	}
	var t uint64
	for _, f := range pk.Filters {
		s.subs.Delete(subKey{cl.ID, f.Filter})
		t = s.send(sop{kind: sopUnsub, client: cl.ID, key: f.Filter})
	}
	s.ackAfter(cl, t, "UNSUBSCRIBE")
}

// ackAfter holds the ack mochi sends after a hook until ticket t is
// committed; a commit that fails closes the client's connection instead,
// so it is never told something was kept that was not.
func (s *sessionStore) ackAfter(cl *mqtt.Client, t uint64, what string) error {
	if t == 0 || cl.Net.Inline {
		return nil
	}
	err := s.wait(t, 10*time.Second)
	if err != nil {
		s.h.log.Warn("mqtt "+what+" not acknowledged: the persistent session's change was not stored", "client", cl.ID, "err", err)
		cl.Stop(err)
	}
	return err
}

// msgKey names a stored message: the client and the packet id the hub
// gave it.
type msgKey struct {
	client string
	id     uint16
}

// OnQosPublish stores a message mochi queued or sent to a persistent
// session, and its PUBREL in its place once the client PUBREC'd it (so a
// restart sends the PUBREL again, never the PUBLISH: [MQTT-4.3.3-5]).
// The hub's acks to the client's own publishes are not stored here (see
// OnPublished).
func (s *sessionStore) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, resends int) {
	if !persistentSession(cl) || s.ended(cl) {
		return
	}
	if pk.FixedHeader.Type == packets.Pubrel {
		// Written before the PUBREL goes out (mochi writes it after this
		// hook): once the client has it, the PUBLISH is never sent again.
		if _, ok := s.stored.Load(msgKey{cl.ID, pk.PacketID}); ok {
			t := s.send(sop{kind: sopMsg, client: cl.ID, id: pk.PacketID, data: encodeMessageRow(storage.InflightKey, cl.ID, pk, sent)})
			if err := s.wait(t, 10*time.Second); t != 0 && err != nil {
				s.h.log.Warn("mqtt PUBREL not stored: the message may be sent again after a restart", "client", cl.ID, "err", err)
			}
		}
		return
	}
	if pk.FixedHeader.Type != packets.Publish {
		return
	}
	// sent 0: mochi holds it (the client is away, or its Receive Maximum
	// is reached), and a restart restores it as never sent, without DUP.
	// Once sent it is written again, as sent; one stored as sent is not
	// written when it is sent again. Not waited for (its publisher waits
	// for the first write only): killed in between, a message sent just
	// before may come back without DUP.
	key := msgKey{cl.ID, pk.PacketID}
	v, had := s.stored.Load(key)
	if had && !v.(bool) && sent != 0 {
		return
	}
	t := s.send(sop{kind: sopMsg, client: cl.ID, id: pk.PacketID, data: encodeMessageRow(storage.InflightKey, cl.ID, pk, sent)})
	if t == 0 {
		return
	}
	s.stored.Store(key, sent == 0)
	if !had && pk.Origin != "" && pk.Origin != cl.ID {
		if _, had := s.waits.Swap(pk.Origin, t); !had {
			s.nwaits.Add(1)
		}
	}
}

func encodeMessageRow(t, client string, pk packets.Packet, sent int64) []byte {
	props := pk.Properties
	m := storage.Message{T: t, Client: client, Origin: pk.Origin, FixedHeader: pk.FixedHeader,
		TopicName: pk.TopicName, Payload: pk.Payload, Sent: sent, Created: pk.Created, PacketID: pk.PacketID,
		Properties: storage.MessageProperties{PayloadFormat: props.PayloadFormat, PayloadFormatFlag: props.PayloadFormatFlag,
			MessageExpiryInterval: props.MessageExpiryInterval, ContentType: props.ContentType, ResponseTopic: props.ResponseTopic,
			CorrelationData: props.CorrelationData, SubscriptionIdentifier: props.SubscriptionIdentifier, User: props.User}}
	b, _ := json.Marshal(m)
	return b
}

// OnQosComplete: the client acknowledged a message the hub sent (its
// PUBACK, or PUBCOMP for QoS 2); mochi's own PUBACK for an inbound QoS 1
// publish comes here too, and is told apart by having been built here
// (Created set).
func (s *sessionStore) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if s.ended(cl) {
		return
	}
	switch {
	case pk.FixedHeader.Type == packets.Puback && pk.Created == 0, pk.FixedHeader.Type == packets.Pubcomp:
		s.done(cl.ID, pk.PacketID)
	case pk.FixedHeader.Type == packets.Pubrel: // the client's PUBREL: its QoS 2 publish is complete
		s.rcvdDone(cl.ID, pk.PacketID)
	}
}

// OnQosDropped: mochi gave up a message (session cleared, expired, too
// large for the client), or the client's QoS 2 flow (its PUBREL with an
// error, or the session cleared). Packets the client sent have Created 0;
// the hub's own have it set.
func (s *sessionStore) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	if s.ended(cl) {
		return
	}
	switch {
	case pk.FixedHeader.Type == packets.Pubrec, pk.FixedHeader.Type == packets.Pubrel && pk.Created == 0:
		s.rcvdDone(cl.ID, pk.PacketID)
	case pk.FixedHeader.Type == packets.Publish || pk.FixedHeader.Type == packets.Pubrel:
		s.done(cl.ID, pk.PacketID)
	}
}

func (s *sessionStore) rcvdDone(client string, id uint16) {
	if _, ok := s.rcvd.LoadAndDelete(msgKey{client, id}); ok {
		s.send(sop{kind: sopRcvdDone, client: client, id: id})
	}
}

func (s *sessionStore) done(client string, id uint16) {
	if _, ok := s.stored.LoadAndDelete(msgKey{client, id}); ok {
		s.send(sop{kind: sopMsgDone, client: client, id: id})
	}
}

// OnRetainMessage stores a retained message (or its removal); a QoS 1 or
// 2 publisher is acknowledged once it is committed (OnPublished), so a
// retained message acknowledged survives kill -9, and one cleared stays
// cleared.
func (s *sessionStore) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	var t uint64
	if r == -1 {
		t = s.send(sop{kind: sopUnretain, key: pk.TopicName})
	} else {
		t = s.send(sop{kind: sopRetain, key: pk.TopicName, data: encodeMessageRow(storage.RetainedKey, cl.ID, pk, 0)})
	}
	if t != 0 && pk.FixedHeader.Qos > 0 && !cl.Net.Inline && !cl.Closed() {
		if _, had := s.waits.Swap(cl.ID, t); !had {
			s.nwaits.Add(1)
		}
	}
}

func (s *sessionStore) OnRetainedExpired(topic string) {
	s.send(sop{kind: sopUnretain, key: topic})
}

// OnPublished runs after mochi handed a publish to its subscribers and
// before it acknowledges it: when a persistent session took it, the ack
// waits for the commit. A failed commit closes the publisher's connection
// instead, so it is never told a message was kept that was not.
//
// A QoS 2 publish from a persistent session has its packet id stored too,
// after the copies (commits are in order: the id committed means the
// copies are), and its PUBREC waits for it: the client resending it after
// a restart is answered without a second delivery. Killed before that
// commit, the client was not PUBREC'd, resends, and the message is
// delivered again: at least once, never lost.
func (s *sessionStore) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	if pk.FixedHeader.Qos == 0 || cl.Net.Inline {
		return
	}
	var t uint64
	if s.nwaits.Load() > 0 {
		if v, ok := s.waits.LoadAndDelete(cl.ID); ok {
			s.nwaits.Add(-1)
			t = v.(uint64)
		}
	}
	if pk.FixedHeader.Qos == 2 && persistentSession(cl) && !s.ended(cl) {
		if rt := s.send(sop{kind: sopRcvd, client: cl.ID, id: pk.PacketID}); rt != 0 {
			s.rcvd.Store(msgKey{cl.ID, pk.PacketID}, struct{}{})
			t = rt
		}
	}
	if t == 0 {
		return
	}
	if err := s.wait(t, 10*time.Second); err != nil {
		s.h.log.Warn("mqtt publish not acknowledged: its persistent subscribers' copy was not stored", "client", cl.ID, "err", err)
		cl.Stop(err)
	}
}

// wait blocks until ticket t is committed.
func (s *sessionStore) wait(t uint64, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		s.mu.Lock()
		switch {
		case s.committed >= t:
			s.mu.Unlock()
			return nil
		case s.failed >= t:
			err := s.lastErr
			s.mu.Unlock()
			if err == nil {
				err = errors.New("session store commit failed")
			}
			return err
		}
		g := s.gen
		s.mu.Unlock()
		select {
		case <-g:
		case <-s.stopped:
			return errors.New("hub stopping")
		case <-timer.C:
			return errors.New("session store: no commit within " + d.String())
		}
	}
}

// run commits queued ops until stopped, then commits what is left.
func (s *sessionStore) run() {
	defer close(s.stopped)
	var retry []sop
	for {
		var batch []sop
		select {
		case o := <-s.ops:
			batch = append(retry, o)
		case <-s.stop:
			batch = retry
			for {
				select {
				case o := <-s.ops:
					batch = append(batch, o)
					continue
				default:
				}
				break
			}
			if len(batch) > 0 {
				s.commit(batch)
			}
			return
		}
		retry = nil
	more:
		for len(batch) < 4096 {
			select {
			case o := <-s.ops:
				batch = append(batch, o)
			default:
				break more
			}
		}
		if err := s.commit(batch); err != nil {
			retry = batch // kept: what mochi holds in memory is still to be stored
			if len(retry) > 100000 {
				s.dropCount.Add(uint64(len(retry)))
				retry = nil
			}
			select {
			case <-time.After(time.Second):
			case <-s.stop:
			}
		}
	}
}

// commitDelay holds each commit back, so a test can show that nothing
// is acknowledged before its commit (kill -9 inside the window); 0 but
// in tests.
var commitDelay time.Duration

func (s *sessionStore) commit(batch []sop) error {
	if commitDelay > 0 {
		time.Sleep(commitDelay)
	}
	err := s.tx(batch)
	last := batch[len(batch)-1].ticket
	s.mu.Lock()
	if err != nil {
		s.failed = max(s.failed, last)
		s.lastErr = err
		if time.Since(s.lastLog) > 10*time.Second {
			s.lastLog = time.Now()
			s.log.Error("persistent sessions: commit failed", "err", err, "ops", len(batch))
		}
	} else {
		s.committed = max(s.committed, last)
		s.lastErr = nil
	}
	close(s.gen)
	s.gen = make(chan struct{})
	s.mu.Unlock()
	return err
}

func (s *sessionStore) tx(batch []sop) error {
	ctx := context.Background()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sessions commit: %w", err)
	}
	defer tx.Rollback()
	for _, o := range batch {
		var err error
		switch o.kind {
		case sopClient:
			_, err = tx.ExecContext(ctx, `INSERT INTO hub_sessions (client_id, data) VALUES (?, ?)
				ON CONFLICT(client_id) DO UPDATE SET data = excluded.data`, o.client, o.data)
		case sopForget:
			for _, q := range []string{`DELETE FROM hub_sessions WHERE client_id = ?`, `DELETE FROM hub_session_subs WHERE client_id = ?`,
				`DELETE FROM hub_session_msgs WHERE client_id = ?`, `DELETE FROM hub_session_rcvd WHERE client_id = ?`} {
				if _, err = tx.ExecContext(ctx, q, o.client); err != nil {
					break
				}
			}
		case sopSub:
			_, err = tx.ExecContext(ctx, `INSERT INTO hub_session_subs (client_id, filter, data) VALUES (?, ?, ?)
				ON CONFLICT(client_id, filter) DO UPDATE SET data = excluded.data`, o.client, o.key, o.data)
		case sopUnsub:
			_, err = tx.ExecContext(ctx, `DELETE FROM hub_session_subs WHERE client_id = ? AND filter = ?`, o.client, o.key)
		case sopMsg:
			_, err = tx.ExecContext(ctx, `INSERT INTO hub_session_msgs (client_id, packet_id, data) VALUES (?, ?, ?)
				ON CONFLICT(client_id, packet_id) DO UPDATE SET data = excluded.data`, o.client, o.id, o.data)
		case sopMsgDone:
			_, err = tx.ExecContext(ctx, `DELETE FROM hub_session_msgs WHERE client_id = ? AND packet_id = ?`, o.client, o.id)
		case sopRcvd:
			_, err = tx.ExecContext(ctx, `INSERT OR IGNORE INTO hub_session_rcvd (client_id, packet_id) VALUES (?, ?)`, o.client, o.id)
		case sopRcvdDone:
			_, err = tx.ExecContext(ctx, `DELETE FROM hub_session_rcvd WHERE client_id = ? AND packet_id = ?`, o.client, o.id)
		case sopRetain:
			_, err = tx.ExecContext(ctx, `INSERT INTO hub_retained (topic, data) VALUES (?, ?)
				ON CONFLICT(topic) DO UPDATE SET data = excluded.data`, o.key, o.data)
		case sopUnretain:
			_, err = tx.ExecContext(ctx, `DELETE FROM hub_retained WHERE topic = ?`, o.key)
		}
		if err != nil {
			return fmt.Errorf("sessions commit: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sessions commit: %w", err)
	}
	return nil
}

// close stops the writer after it committed what was queued.
func (s *sessionStore) close() {
	s.sendMu.Lock()
	if s.closed {
		s.sendMu.Unlock()
		return
	}
	s.closed = true
	s.sendMu.Unlock()
	close(s.stop)
	<-s.stopped
}

// health is the last commit error, while commits fail.
func (s *sessionStore) health() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

// StoredClients hands mochi the stored sessions at Serve; while it loads
// them, OnDisconnect attaches each to its identity (attachLoaded).
func (s *sessionStore) StoredClients() ([]storage.Client, error) {
	s.dropOrphans()
	rows, err := s.db.Query(`SELECT data FROM hub_sessions ORDER BY client_id`)
	if err != nil {
		return nil, fmt.Errorf("load sessions: %w", err)
	}
	defer rows.Close()
	var out []storage.Client
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			return nil, fmt.Errorf("load sessions: %w", err)
		}
		var v struct {
			Client storage.Client `json:"client"`
			Owner  sessionOwner   `json:"owner"`
		}
		if err := json.Unmarshal(data, &v); err != nil || v.Client.ID == "" {
			s.log.Warn("persistent session: unreadable row skipped", "err", err)
			continue
		}
		s.loaded.Store(v.Client.ID, v.Owner)
		s.persistent.Store(v.Client.ID, struct{}{})
		out = append(out, v.Client)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load sessions: %w", err)
	}
	s.loading.Store(true)
	return out, nil
}

// attachLoaded gives a session mochi restored its hub session (who holds
// it, what it may read), or forgets it when its identity is gone.
func (s *sessionStore) attachLoaded(cl *mqtt.Client, expire bool) {
	v, ok := s.loaded.LoadAndDelete(cl.ID)
	if !ok || expire {
		return
	}
	o := v.(sessionOwner)
	var sess *session
	switch {
	case o.Anonymous && s.h.dev:
		sess = &session{anonymous: true, device: cl.ID}
	case o.Identity != "":
		if id := s.h.ids.get(o.Identity); id != nil && id.Enabled {
			sess = s.h.newSession(id, o.Auth)
		}
	}
	if sess == nil {
		s.log.Info("persistent session dropped: its identity is gone", "client", cl.ID, "identity", o.Identity)
		s.forget(cl.ID)
		return
	}
	sess.cl = cl
	sess.closed = true
	s.h.sessions.Store(cl, sess)
	s.h.hold(cl.ID, sess)
}

// loadDone ends loading: sessions whose identity is gone leave mochi too.
func (s *sessionStore) loadDone(srv *mqtt.Server) {
	s.loading.Store(false)
	for id, cl := range srv.Clients.GetAll() {
		if s.h.sessionOf(cl) == nil && cl.Closed() {
			srv.UnsubscribeClient(cl)
			srv.Clients.Delete(id)
			cl.ClearInflights()
		}
	}
	s.loaded.Range(func(k, _ any) bool { s.loaded.Delete(k); return true })
}

func (s *sessionStore) StoredSubscriptions() ([]storage.Subscription, error) {
	rows, err := s.db.Query(`SELECT data FROM hub_session_subs ORDER BY client_id, filter`)
	if err != nil {
		return nil, fmt.Errorf("load subscriptions: %w", err)
	}
	defer rows.Close()
	var out []storage.Subscription
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			return nil, fmt.Errorf("load subscriptions: %w", err)
		}
		var sub storage.Subscription
		if json.Unmarshal(data, &sub) == nil {
			out = append(out, sub)
			s.subs.Store(subKey{sub.Client, sub.Filter}, string(data))
		}
	}
	return out, rows.Err()
}

// StoredInflightMessages returns queued messages in the order they were
// queued (mochi, as patched, resends them in that order), and the
// client's PUBREC'd QoS 2 ids as PUBRECs (mochi, as patched, keeps those
// apart, as the client's ids).
// dropOrphans deletes, at start (nothing is connected yet), the
// subscriptions, messages and QoS 2 ids of client ids that have no session
// row: a packet of a connection being taken over can still write one after
// its session was deleted. They were loaded and ignored at every start, and
// kept for good.
func (s *sessionStore) dropOrphans() {
	var n int64
	for _, table := range []string{"hub_session_subs", "hub_session_msgs", "hub_session_rcvd"} {
		res, err := s.db.Exec(`DELETE FROM ` + table + ` WHERE client_id NOT IN (SELECT client_id FROM hub_sessions)`)
		if err != nil {
			s.log.Warn("persistent sessions: rows of ended sessions not removed", "table", table, "err", err)
			continue
		}
		m, _ := res.RowsAffected()
		n += m
	}
	if n > 0 {
		s.log.Info("persistent sessions: rows of ended sessions removed", "rows", n)
	}
}

func (s *sessionStore) StoredInflightMessages() ([]storage.Message, error) {
	out, err := s.messages(`SELECT data FROM hub_session_msgs ORDER BY seq`)
	if err != nil {
		return nil, err
	}
	rows, err := s.db.Query(`SELECT client_id, packet_id FROM hub_session_rcvd ORDER BY client_id, packet_id`)
	if err != nil {
		return nil, fmt.Errorf("load sessions: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var m storage.Message
		if err := rows.Scan(&m.Client, &m.PacketID); err != nil {
			return nil, fmt.Errorf("load sessions: %w", err)
		}
		m.T = storage.InflightKey
		m.FixedHeader = packets.FixedHeader{Type: packets.Pubrec}
		s.rcvd.Store(msgKey{m.Client, m.PacketID}, struct{}{})
		out = append(out, m)
	}
	return out, rows.Err()
}

func (s *sessionStore) StoredRetainedMessages() ([]storage.Message, error) {
	return s.messages(`SELECT data FROM hub_retained ORDER BY topic`)
}

func (s *sessionStore) messages(q string) ([]storage.Message, error) {
	rows, err := s.db.Query(q)
	if err != nil {
		return nil, fmt.Errorf("load messages: %w", err)
	}
	defer rows.Close()
	var out []storage.Message
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			return nil, fmt.Errorf("load messages: %w", err)
		}
		var m storage.Message
		if err := json.NewDecoder(bytes.NewReader(data)).Decode(&m); err == nil {
			if m.T == storage.InflightKey {
				s.stored.Store(msgKey{m.Client, m.PacketID}, m.Sent == 0 && m.FixedHeader.Type == packets.Publish)
			}
			out = append(out, m)
		}
	}
	return out, rows.Err()
}
