// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co
// SPDX-FileContributor: mochi-co

package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/xid"

	"github.com/mochi-mqtt/server/v2/packets"
)

const (
	defaultKeepalive             uint16 = 10 // the default connection keepalive value in seconds.
	defaultClientProtocolVersion byte   = 4  // the default mqtt protocol version of connecting clients (if somehow unspecified).
	minimumKeepalive             uint16 = 5  // the minimum recommended keepalive - values under with display a warning.
)

var (
	ErrMinimumKeepalive = errors.New("client keepalive is below minimum recommended value and may exhibit connection instability")
)

// ReadFn is the function signature for the function used for reading and processing new packets.
type ReadFn func(*Client, packets.Packet) error

// Clients contains a map of the clients known by the broker.
type Clients struct {
	internal map[string]*Client // clients known by the broker, keyed on client id.
	sync.RWMutex
}

// NewClients returns an instance of Clients.
func NewClients() *Clients {
	return &Clients{
		internal: make(map[string]*Client),
	}
}

// Add adds a new client to the clients map, keyed on client id.
func (cl *Clients) Add(val *Client) {
	cl.Lock()
	defer cl.Unlock()
	cl.internal[val.ID] = val
}

// GetAll returns all the clients.
func (cl *Clients) GetAll() map[string]*Client {
	cl.RLock()
	defer cl.RUnlock()
	m := map[string]*Client{}
	for k, v := range cl.internal {
		m[k] = v
	}
	return m
}

// Get returns the value of a client if it exists.
func (cl *Clients) Get(id string) (*Client, bool) {
	cl.RLock()
	defer cl.RUnlock()
	val, ok := cl.internal[id]
	return val, ok
}

// Len returns the length of the clients map.
func (cl *Clients) Len() int {
	cl.RLock()
	defer cl.RUnlock()
	val := len(cl.internal)
	return val
}

// Delete removes a client from the internal map.
func (cl *Clients) Delete(id string) {
	cl.Lock()
	defer cl.Unlock()
	delete(cl.internal, id)
}

// GetByListener returns clients matching a listener id.
func (cl *Clients) GetByListener(id string) []*Client {
	cl.RLock()
	defer cl.RUnlock()
	clients := make([]*Client, 0, len(cl.internal)) // not cl.Len(): a second read lock deadlocks with a waiting writer
	for _, client := range cl.internal {
		if client.Net.Listener == id && !client.Closed() {
			clients = append(clients, client)
		}
	}
	return clients
}

// Client contains information about a client known by the broker.
type Client struct {
	Properties   ClientProperties // client properties
	State        ClientState      // the operational state of the client.
	Net          ClientConnection // network connection state of the client
	ID           string           // the client id.
	ops          *ops             // ops provides a reference to server ops.
	sync.RWMutex                  // mutex
}

// ClientConnection contains the connection transport and metadata for the client.
type ClientConnection struct {
	Conn   net.Conn      // the net.Conn used to establish the connection
	bconn  *bufio.Reader // a buffered net.Conn for reading packets
	outbuf *bytes.Buffer // a buffer for writing packets
	spare  *bytes.Buffer // outbuf once written out, emptied, for the next batch
	// deferredBy is the client whose reader holds back what outbuf has
	// (writeDeferred): it writes it when it next reads its socket.
	deferredBy *Client
	raw        *rawIO // the raw socket, for plain TCP with InlineClientWrites (nil otherwise)
	Remote     string // the remote address of the client
	Listener   string // listener id of the client
	Inline     bool   // if true, the client is the built-in 'inline' embedded client
}

// ClientProperties contains the properties which define the client behaviour.
type ClientProperties struct {
	Props           packets.Properties
	Will            Will
	Username        []byte
	ProtocolVersion byte
	Clean           bool
}

// Will contains the last will and testament details for a client connection.
type Will struct {
	Payload               []byte                 // -
	User                  []packets.UserProperty // -
	TopicName             string                 // -
	Flag                  uint32                 // 0,1
	WillDelayInterval     uint32                 // -
	Qos                   byte                   // -
	Retain                bool                   // -
	PayloadFormat         byte                   // the Will Properties the message is published with
	PayloadFormatFlag     bool                   // -
	MessageExpiryInterval uint32                 // -
	ContentType           string                 // -
	ResponseTopic         string                 // -
	CorrelationData       []byte                 // -
}

// ClientState tracks the state of the client.
type ClientState struct {
	TopicAliases    TopicAliases           // a map of topic aliases
	stopCause       atomic.Value           // reason for stopping
	Inflight        *Inflight              // the server's in-flight qos messages to the client, by the server's packet ids
	Received        *Inflight              // the client's qos flows in progress (PUBREC sent, PUBREL awaited), by the client's packet ids
	Subscriptions   *Subscriptions         // a map of the subscription filters a client maintains
	disconnected    int64                  // the time the client disconnected in unix time, for calculating expiry
	outbound        chan *packets.Packet   // queue for pending outbound packets
	endOnce         sync.Once              // only end once
	isTakenOver     atomic.Bool            // used to identify orphaned clients
	packetID        uint32                 // the current highest packetID
	packetIDMu      sync.Mutex             // guards NextPacketID
	open            context.Context        // indicate that the client is open for packet exchange
	cancelOpen      context.CancelFunc     // cancel function for open context
	outboundQty     int32                  // number of messages currently in the outbound queue
	lastPublish     int64                  // when the last publish was sent or queued to the client (unix ns), for InlineClientWrites
	readMore        atomic.Bool            // Read had more of the client's bytes buffered when it handed over the packet being handled
	deferMu         sync.Mutex             // guards deferred
	deferred        []*Client              // subscribers holding this client's messages in their outbuf (writeDeferred), written before it reads its socket
	gate            sync.RWMutex           // held by deliveries (read) and by a session take-over or resumption (write), see publishToClient
	movedTo         atomic.Pointer[Client] // the client that took this one's session over
	Keepalive       uint16                 // the number of seconds the connection can wait
	ConnectRefusal  packets.Code           // set by an OnConnectAuthenticate hook that refuses: the CONNACK's code (default bad username or password)
	ServerKeepalive bool                   // keepalive was set by the server
}

// newClient returns a new instance of Client. This is almost exclusively used by Server
// for creating new clients, but it lives here because it's not dependent.
func newClient(c net.Conn, o *ops) *Client {
	ctx, cancel := context.WithCancel(context.Background())
	cl := &Client{
		State: ClientState{
			Inflight:      NewInflights(),
			Received:      NewInflights(),
			Subscriptions: NewSubscriptions(),
			TopicAliases:  NewTopicAliases(o.options.Capabilities.TopicAliasMaximum),
			open:          ctx,
			cancelOpen:    cancel,
			Keepalive:     defaultKeepalive,
			outbound:      make(chan *packets.Packet, o.options.Capabilities.MaximumClientWritesPending),
		},
		Properties: ClientProperties{
			ProtocolVersion: defaultClientProtocolVersion, // default protocol version
		},
		ops: o,
	}

	if c != nil {
		var r io.Reader = c
		var raw *rawIO
		if o.options.InlineClientWrites {
			if raw = newRawIO(c); raw != nil {
				r = raw
			}
		}
		cl.Net = ClientConnection{
			Conn:   c,
			bconn:  bufio.NewReaderSize(flushingReader{cl: cl, r: r}, o.options.ClientNetReadBufferSize),
			raw:    raw,
			Remote: c.RemoteAddr().String(),
		}
	}

	return cl
}

// WriteLoop ranges over pending outbound messages and writes them to the client connection.
func (cl *Client) WriteLoop() {
	for {
		select {
		case pk := <-cl.State.outbound:
			if pk.FixedHeader.Type == flushMarker {
				cl.Lock()
				if err := cl.flushOutbuf(); err != nil {
					cl.ops.log.Debug("failed flushing", "error", err, "client", cl.ID)
				}
				cl.Unlock()
				atomic.AddInt32(&cl.State.outboundQty, -1)
				continue
			}
			if err := cl.WritePacket(*pk); err != nil {
				// TODO : Figure out what to do with error
				cl.ops.log.Debug("failed publishing packet", "error", err, "client", cl.ID, "packet", pk)
			}
			atomic.AddInt32(&cl.State.outboundQty, -1)
		case <-cl.State.open.Done():
			return
		}
	}
}

// ParseConnect parses the connect parameters and properties for a client.
func (cl *Client) ParseConnect(lid string, pk packets.Packet) {
	cl.Net.Listener = lid

	cl.Properties.ProtocolVersion = pk.ProtocolVersion
	cl.Properties.Username = pk.Connect.Username
	cl.Properties.Clean = pk.Connect.Clean
	cl.Properties.Props = pk.Properties.Copy(false)

	if cl.Properties.Props.ReceiveMaximum > cl.ops.options.Capabilities.MaximumInflight { // 3.3.4 Non-normative
		cl.Properties.Props.ReceiveMaximum = cl.ops.options.Capabilities.MaximumInflight
	}

	if pk.Connect.Keepalive <= minimumKeepalive {
		cl.ops.log.Warn(
			ErrMinimumKeepalive.Error(),
			"client", cl.ID,
			"keepalive", pk.Connect.Keepalive,
			"recommended", minimumKeepalive,
		)
	}

	cl.State.Keepalive = pk.Connect.Keepalive                                              // [MQTT-3.2.2-22]
	cl.State.Inflight.ResetReceiveQuota(int32(cl.ops.options.Capabilities.ReceiveMaximum)) // server receive max per client
	cl.State.Inflight.ResetSendQuota(int32(cl.Properties.Props.ReceiveMaximum))            // client receive max
	cl.State.TopicAliases.Outbound = NewOutboundTopicAliases(cl.Properties.Props.TopicAliasMaximum)

	cl.ID = pk.Connect.ClientIdentifier
	if cl.ID == "" {
		cl.ID = xid.New().String() // [MQTT-3.1.3-6] [MQTT-3.1.3-7]
		cl.Properties.Props.AssignedClientID = cl.ID
	}

	if pk.Connect.WillFlag {
		cl.Properties.Will = Will{
			Qos:               pk.Connect.WillQos,
			Retain:            pk.Connect.WillRetain,
			Payload:           pk.Connect.WillPayload,
			TopicName:         pk.Connect.WillTopic,
			WillDelayInterval: pk.Connect.WillProperties.WillDelayInterval,
			User:              pk.Connect.WillProperties.User,

			PayloadFormat:         pk.Connect.WillProperties.PayloadFormat,
			PayloadFormatFlag:     pk.Connect.WillProperties.PayloadFormatFlag,
			MessageExpiryInterval: pk.Connect.WillProperties.MessageExpiryInterval,
			ContentType:           pk.Connect.WillProperties.ContentType,
			ResponseTopic:         pk.Connect.WillProperties.ResponseTopic,
			CorrelationData:       pk.Connect.WillProperties.CorrelationData,
		}
		if pk.Properties.SessionExpiryIntervalFlag &&
			pk.Properties.SessionExpiryInterval < pk.Connect.WillProperties.WillDelayInterval {
			cl.Properties.Will.WillDelayInterval = pk.Properties.SessionExpiryInterval
		}
		if pk.Connect.WillFlag {
			cl.Properties.Will.Flag = 1 // atomic for checking
		}
	}
}

// refreshDeadline refreshes the read/write deadline for the net.Conn connection.
func (cl *Client) refreshDeadline(keepalive uint16) {
	var expiry time.Time // nil time can be used to disable deadline if keepalive = 0
	if keepalive > 0 {
		expiry = time.Now().Add(time.Duration(keepalive+(keepalive/2)) * time.Second) // [MQTT-3.1.2-22]
	}

	if cl.Net.Conn != nil {
		_ = cl.Net.Conn.SetDeadline(expiry) // [MQTT-3.1.2-22]
	}
}

// NextPacketID returns the next available (unused) packet id for the client.
// If no unused packet ids are available, an error is returned and the client
// should be disconnected.
func (cl *Client) NextPacketID() (i uint32, err error) {
	// Its own lock, not the client's: that one is held by a write to the
	// client's socket, which blocks while the client does not read, and a
	// publisher delivering to it must not wait for that.
	cl.State.packetIDMu.Lock()
	defer cl.State.packetIDMu.Unlock()

	i = atomic.LoadUint32(&cl.State.packetID)
	started := i
	overflowed := false
	for {
		if overflowed && i == started {
			return 0, packets.ErrQuotaExceeded
		}

		if i >= cl.ops.options.Capabilities.maximumPacketID {
			overflowed = true
			i = 0
			continue
		}

		i++

		if _, ok := cl.State.Inflight.Get(uint16(i)); !ok {
			atomic.StoreUint32(&cl.State.packetID, i)
			return i, nil
		}
	}
}

// ResendInflightMessages attempts to resend any pending inflight messages to connected clients.
// What was sent before goes again with DUP; a message held back (queued
// while the client was away, or over its Receive Maximum) goes for the
// first time, without DUP. At most the client's Receive Maximum of
// PUBLISHes are sent [MQTT-4.9.0-2]; PUBRELs are always sent and count
// until their PUBCOMP. The rest stay held and are sent as acknowledgements
// come in (Server.processPacket), in the order they were queued.
func (cl *Client) ResendInflightMessages(force bool) error {
	if cl.State.Inflight.Len() == 0 {
		return nil
	}

	now := time.Now().Unix()
	limited := atomic.LoadInt32(&cl.State.Inflight.maximumSendQuota) > 0
	for _, tk := range cl.State.Inflight.GetAll(false) {
		if tk.FixedHeader.Type == packets.Publish && cl.dropExpired(tk, now) {
			continue // expired while the client was away [MQTT-3.3.2-5]
		}
		if tk.FixedHeader.Type == packets.Publish && limited && atomic.LoadInt32(&cl.State.Inflight.sendQuota) == 0 {
			if tk.Expiry >= 0 {
				tk.FixedHeader.Dup = true // it was sent before
				tk.Expiry = -1
				cl.State.Inflight.Set(tk)
			}
			continue
		}
		// A PUBREL always goes: Receive Maximum limits PUBLISH packets, and
		// its flow, already counted, ends only with the PUBCOMP.
		if tk.FixedHeader.Type == packets.Publish {
			if tk.Expiry >= 0 {
				tk.FixedHeader.Dup = true // [MQTT-3.3.1-1] [MQTT-3.3.1-3]
			}
			tk.Expiry = messageExpiry(tk, cl.ops.options.Capabilities.MaximumMessageExpiryInterval)
			cl.State.Inflight.Set(tk)
		}
		if tk.FixedHeader.Type == packets.Publish || tk.FixedHeader.Type == packets.Pubrel {
			cl.State.Inflight.DecreaseSendQuota()
		}

		cl.ops.hooks.OnQosPublish(cl, tk, tk.Created, 0)
		err := cl.WritePacket(tk)
		if errors.Is(err, packets.ErrPacketTooLarge) {
			continue // dropped by WritePacket, as if sent
		}
		if err != nil {
			return err
		}

		if tk.FixedHeader.Type == packets.Puback || tk.FixedHeader.Type == packets.Pubcomp {
			if ok := cl.State.Inflight.Delete(tk.PacketID); ok {
				cl.ops.hooks.OnQosComplete(cl, tk)
				atomic.AddInt64(&cl.ops.info.Inflight, -1)
			}
		}
	}

	return nil
}

// heldExpiry is when an inflight PUBLISH expires: its Expiry, or for one
// held back (Expiry -1) its own Message Expiry Interval from its creation
// (0: never).
func (cl *Client) heldExpiry(tk packets.Packet) int64 {
	if tk.Expiry >= 0 {
		return tk.Expiry
	}
	return messageExpiry(tk, cl.ops.options.Capabilities.MaximumMessageExpiryInterval)
}

// dropExpired drops an inflight PUBLISH whose Message Expiry Interval has
// passed, and says whether it did.
func (cl *Client) dropExpired(tk packets.Packet, now int64) bool {
	if exp := cl.heldExpiry(tk); exp <= 0 || exp >= now {
		return false
	}
	if cl.State.Inflight.Delete(tk.PacketID) {
		cl.ops.hooks.OnQosDropped(cl, tk)
		atomic.AddInt64(&cl.ops.info.Inflight, -1)
	}
	return true
}

// ClearInflights deletes all inflight messages for the client, e.g. for a disconnected user with a clean session.
func (cl *Client) ClearInflights() {
	for _, tk := range cl.State.Inflight.GetAll(false) {
		if ok := cl.State.Inflight.Delete(tk.PacketID); ok {
			cl.ops.hooks.OnQosDropped(cl, tk)
			atomic.AddInt64(&cl.ops.info.Inflight, -1)
		}
	}
	for _, tk := range cl.State.Received.GetAll(false) {
		if ok := cl.State.Received.Delete(tk.PacketID); ok {
			cl.ops.hooks.OnQosDropped(cl, tk)
		}
	}
}

// ClearExpiredInflights deletes any inflight messages which have expired.
func (cl *Client) ClearExpiredInflights(now, maximumExpiry int64) []uint16 {
	deleted := []uint16{}
	for _, tk := range cl.State.Inflight.GetAll(false) {
		exp := cl.heldExpiry(tk)
		expired := (tk.ProtocolVersion == 5 || tk.Expiry < 0) && exp > 0 && exp < now // [MQTT-3.3.2-5]; held back ones too

		// If the maximum message expiry interval is set (greater than 0), and the message
		// retention period exceeds the maximum expiry, the message will be forcibly removed.
		enforced := maximumExpiry > 0 && now-tk.Created > maximumExpiry

		if expired || enforced {
			if ok := cl.State.Inflight.Delete(tk.PacketID); ok {
				cl.ops.hooks.OnQosDropped(cl, tk)
				atomic.AddInt64(&cl.ops.info.Inflight, -1)
				deleted = append(deleted, tk.PacketID)
			}
		}
	}

	return deleted
}

// Read reads incoming packets from the connected client and transforms them into
// packets to be handled by the packetHandler.
func (cl *Client) Read(packetHandler ReadFn) error {
	var err error
	defer cl.flushDeferred() // what its last messages left held back

	for {
		if cl.Closed() {
			// Stopped between two packets: by the client's own DISCONNECT
			// (no error, no Will), or by the server (a shutdown, a
			// takeover, an expired token): its cause, so the Will goes out
			// as it does when the stop ends a read [MQTT-3.1.2-8].
			return cl.serverStopCause()
		}

		cl.refreshDeadline(cl.State.Keepalive)
		fh := new(packets.FixedHeader)
		err = cl.ReadFixedHeader(fh)
		if err != nil {
			cl.disconnectMalformed(err)
			return err
		}

		pk, err := cl.ReadPacket(fh)
		if err != nil {
			cl.disconnectMalformed(err)
			return err
		}

		cl.State.readMore.Store(cl.Net.bconn.Buffered() > 0) // before the packet is handled: is another one already here?
		err = packetHandler(cl, pk)                          // Process inbound packet.
		if err != nil {
			return err
		}
	}
}

// disconnectMalformed tells an MQTT 5 client why the connection closes
// when a packet it sent cannot be read (malformed: 0x81, e.g. a topic that
// is not UTF-8; too large: 0x95), as mosquitto does, instead of closing
// it without a word [MQTT-4.13.1].
func (cl *Client) disconnectMalformed(err error) {
	var code packets.Code
	if cl.Properties.ProtocolVersion != 5 || !errors.As(err, &code) || code.Code < packets.ErrUnspecifiedError.Code {
		return
	}
	_ = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}, ReasonCode: code.Code,
		Properties: packets.Properties{ReasonString: code.Reason}})
}

// Stop instructs the client to shut down all processing goroutines and disconnect.
func (cl *Client) Stop(err error) {
	cl.State.endOnce.Do(func() {

		if cl.Net.Conn != nil {
			_ = cl.Net.Conn.Close() // omit close error
		}

		if err != nil {
			cl.State.stopCause.Store(err)
		}

		if cl.State.cancelOpen != nil {
			cl.State.cancelOpen()
		}

		atomic.StoreInt64(&cl.State.disconnected, time.Now().Unix())
	})
}

// serverStopCause is why the client was stopped, unless it was by its
// own DISCONNECT (reason 0x00) or not at all: nil then.
func (cl *Client) serverStopCause() error {
	err := cl.StopCause()
	var code packets.Code
	if err == nil || errors.As(err, &code) && code.Code == packets.CodeDisconnect.Code {
		return nil
	}
	return err
}

// StopCause returns the reason the client connection was stopped, if any.
func (cl *Client) StopCause() error {
	if cl.State.stopCause.Load() == nil {
		return nil
	}
	return cl.State.stopCause.Load().(error)
}

// StopTime returns the the time the client disconnected in unix time, else zero.
func (cl *Client) StopTime() int64 {
	return atomic.LoadInt64(&cl.State.disconnected)
}

// Closed returns true if client connection is closed.
func (cl *Client) Closed() bool {
	return cl.State.open == nil || cl.State.open.Err() != nil
}

func (cl *Client) IsTakenOver() bool {
	return cl.State.isTakenOver.Load()
}

// ReadFixedHeader reads in the values of the next packet's fixed header.
func (cl *Client) ReadFixedHeader(fh *packets.FixedHeader) error {
	if cl.Net.bconn == nil {
		return ErrConnectionClosed
	}

	b, err := cl.Net.bconn.ReadByte()
	if err != nil {
		return err
	}

	err = fh.Decode(b)
	if err != nil {
		return err
	}

	var bu int
	fh.Remaining, bu, err = packets.DecodeLength(cl.Net.bconn)
	if err != nil {
		return err
	}

	if cl.ops.options.Capabilities.MaximumPacketSize > 0 && uint32(fh.Remaining+1) > cl.ops.options.Capabilities.MaximumPacketSize {
		return packets.ErrPacketTooLarge // [MQTT-3.2.2-15]
	}

	atomic.AddInt64(&cl.ops.info.BytesReceived, int64(bu+1))
	return nil
}

// ReadPacket reads the remaining buffer into an MQTT packet.
func (cl *Client) ReadPacket(fh *packets.FixedHeader) (pk packets.Packet, err error) {
	atomic.AddInt64(&cl.ops.info.PacketsReceived, 1)

	pk.ProtocolVersion = cl.Properties.ProtocolVersion // inherit client protocol version for decoding
	pk.FixedHeader = *fh
	p := make([]byte, pk.FixedHeader.Remaining)
	n, err := io.ReadFull(cl.Net.bconn, p)
	if err != nil {
		return pk, err
	}

	atomic.AddInt64(&cl.ops.info.BytesReceived, int64(n))

	// p is this packet's own (made above, not the reader's buffer): the
	// decoded packet may keep slices of it (the payload) without a copy.
	// A second copy was made here for every packet read.
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectDecode(p)
	case packets.Disconnect:
		err = pk.DisconnectDecode(p)
	case packets.Connack:
		err = pk.ConnackDecode(p)
	case packets.Publish:
		err = pk.PublishDecode(p)
		if err == nil {
			atomic.AddInt64(&cl.ops.info.MessagesReceived, 1)
		}
	case packets.Puback:
		err = pk.PubackDecode(p)
	case packets.Pubrec:
		err = pk.PubrecDecode(p)
	case packets.Pubrel:
		err = pk.PubrelDecode(p)
	case packets.Pubcomp:
		err = pk.PubcompDecode(p)
	case packets.Subscribe:
		err = pk.SubscribeDecode(p)
	case packets.Suback:
		err = pk.SubackDecode(p)
	case packets.Unsubscribe:
		err = pk.UnsubscribeDecode(p)
	case packets.Unsuback:
		err = pk.UnsubackDecode(p)
	case packets.Pingreq:
	case packets.Pingresp:
	case packets.Auth:
		err = pk.AuthDecode(p)
	default:
		err = fmt.Errorf("invalid packet type; %v", pk.FixedHeader.Type)
	}

	if err != nil {
		return pk, err
	}

	pk, err = cl.ops.hooks.OnPacketRead(cl, pk)
	return
}

// WritePacket encodes and writes a packet to the client.
func (cl *Client) WritePacket(pk packets.Packet) error {
	if cl.Closed() {
		return ErrConnectionClosed
	}

	if cl.Net.Conn == nil {
		return nil
	}

	pk, buf, err := cl.encodePacket(pk)
	if err != nil {
		if errors.Is(err, packets.ErrPacketTooLarge) {
			cl.dropTooLarge(pk)
		}
		return err
	}

	n, err := func() (int64, error) {
		cl.Lock()
		defer cl.Unlock()
		if len(cl.State.outbound) == 0 {
			if cl.Net.outbuf == nil {
				if cl.Net.raw != nil { // what the socket takes now, then the rest as before
					n, err := cl.Net.raw.writeNow(buf.Bytes())
					if err != nil || n == buf.Len() {
						return int64(n), err
					}
					buf.Next(n)
					m, err := buf.WriteTo(cl.Net.Conn)
					return int64(n) + m, err
				}
				return buf.WriteTo(cl.Net.Conn)
			}

			// first write to buffer, then flush buffer
			n, _ := cl.Net.outbuf.Write(buf.Bytes()) // will always be successful
			err = cl.flushOutbuf()
			return int64(n), err
		}

		// there are more writes in the queue
		if cl.Net.outbuf == nil {
			if buf.Len() >= cl.ops.options.ClientNetWriteBufferSize {
				return buf.WriteTo(cl.Net.Conn)
			}
			cl.Net.outbuf, cl.Net.spare = cl.Net.spare, nil
			if cl.Net.outbuf == nil {
				cl.Net.outbuf = new(bytes.Buffer)
			}
		}

		n, _ := cl.Net.outbuf.Write(buf.Bytes()) // will always be successful
		if cl.Net.outbuf.Len() < cl.ops.options.ClientNetWriteBufferSize {
			return int64(n), nil
		}

		err = cl.flushOutbuf()
		return int64(n), err
	}()
	if err != nil {
		return err
	}

	cl.packetSent(pk, buf.Bytes(), n)
	return err
}

// dropTooLarge ends the flow of a message larger than the client's
// Maximum Packet Size: it is discarded as if it had been sent and
// acknowledged [MQTT-3.1.2-25]. Kept in flight, it was tried again at
// every reconnect, failed, and closed the connection each time.
func (cl *Client) dropTooLarge(pk packets.Packet) {
	if pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Qos == 0 {
		return
	}
	if cl.State.Inflight.Delete(pk.PacketID) {
		cl.State.Inflight.IncreaseSendQuota()
		atomic.AddInt64(&cl.ops.info.Inflight, -1)
		cl.ops.hooks.OnQosDropped(cl, pk)
	}
	atomic.AddInt64(&cl.ops.info.MessagesDropped, 1)
}

// packetSent counts a written packet and tells the hooks.
func (cl *Client) packetSent(pk packets.Packet, b []byte, n int64) {
	atomic.AddInt64(&cl.ops.info.BytesSent, n)
	atomic.AddInt64(&cl.ops.info.PacketsSent, 1)
	if pk.FixedHeader.Type == packets.Publish {
		atomic.AddInt64(&cl.ops.info.MessagesSent, 1)
	}

	cl.ops.hooks.OnPacketSent(cl, pk, b)
}

// inlineMinGap is the least time since a client's previous message for
// the next one to be written inline (InlineClientWrites): 100 µs, a
// steady 10,000 messages a second or more goes through WriteLoop, which
// batches.
const inlineMinGap = int64(100 * time.Microsecond)

// flushMarker, queued on the outbound channel, makes WriteLoop write out
// what an inline write left in outbuf.
const flushMarker = packets.Reserved

// writeInline writes a packet for the client from the caller's goroutine
// (the publisher's, in publishToSubscribers) instead of handing it to the
// client's WriteLoop, when nothing is queued for the client and no one is
// writing to it. The write is one non-blocking attempt on the socket:
// what the socket does not take at once stays in outbuf, and WriteLoop
// writes it next, so the publisher never waits for a slow subscriber and
// the bytes stay in order. It saves the goroutine hand-off (a wake-up of
// WriteLoop, and often of another thread) per delivered message. It
// reports false, having written nothing, when the packet must be queued
// as before: something queued or being written, a connection without a
// raw socket (TLS, WebSocket), or a socket that takes nothing now.
func (cl *Client) writeInline(pk packets.Packet) bool {
	if atomic.LoadInt32(&cl.State.outboundQty) != 0 || cl.Net.Conn == nil {
		return false
	}
	sc, ok := cl.Net.Conn.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	if !cl.TryLock() {
		return false
	}
	defer cl.Unlock()
	if cl.Net.outbuf != nil || len(cl.State.outbound) != 0 || atomic.LoadInt32(&cl.State.outboundQty) != 0 || cl.Closed() {
		return false
	}

	pk, buf, err := cl.encodePacket(pk)
	if err != nil {
		return false // queued: WritePacket reports the error as before
	}
	b := buf.Bytes()
	written := 0
	var werr error
	err = raw.Write(func(fd uintptr) bool {
		for written < len(b) {
			n, err := syscall.Write(int(fd), b[written:])
			if n > 0 {
				written += n
			}
			if err == syscall.EINTR {
				continue
			}
			if err != nil && err != syscall.EAGAIN {
				werr = err
			}
			if err != nil || n <= 0 {
				break
			}
		}
		return true // one attempt: never wait for the socket here
	})
	switch {
	case err != nil || werr != nil:
		if written == 0 {
			return false // the queued write meets the error and reports it
		}
		cl.Net.outbuf = bytes.NewBuffer(append([]byte(nil), b[written:]...))
	case written == 0:
		return false // the socket is full: queue it
	case written < len(b):
		cl.Net.outbuf = bytes.NewBuffer(append([]byte(nil), b[written:]...))
	}
	if cl.Net.outbuf != nil {
		select {
		case cl.State.outbound <- &packets.Packet{FixedHeader: packets.FixedHeader{Type: flushMarker}}:
			atomic.AddInt32(&cl.State.outboundQty, 1)
		default: // full: the queued packets flush outbuf first
		}
	}

	cl.packetSent(pk, b, int64(len(b)))
	return true
}

// encodePacket prepares and encodes a packet for this client.
func (cl *Client) encodePacket(pk packets.Packet) (packets.Packet, *bytes.Buffer, error) {
	if pk.Expiry > 0 && pk.Properties.MessageExpiryInterval > 0 { // [MQTT-3.3.2-6]: only a message that had one
		expiry := pk.Expiry - time.Now().Unix()
		if expiry < 1 {
			expiry = 1
		}
		pk.Properties.MessageExpiryInterval = uint32(expiry) // [MQTT-3.3.2-6]
	}

	pk.ProtocolVersion = cl.Properties.ProtocolVersion
	if pk.Mods.MaxSize == 0 { // NB we use this statement to embed client packet sizes in tests
		pk.Mods.MaxSize = cl.Properties.Props.MaximumPacketSize
	}

	if cl.Properties.Props.RequestProblemInfoFlag && cl.Properties.Props.RequestProblemInfo == 0x0 {
		pk.Mods.DisallowProblemInfo = true // [MQTT-3.1.2-29] strict, no problem info on any packet if set
	}

	if pk.FixedHeader.Type != packets.Connack || cl.Properties.Props.RequestResponseInfo == 0x1 || cl.ops.options.Capabilities.Compatibilities.AlwaysReturnResponseInfo {
		pk.Mods.AllowResponseInfo = true // [MQTT-3.1.2-28] we need to know which properties we can encode
	}

	pk = cl.ops.hooks.OnPacketEncode(cl, pk)

	var err error
	var buf *bytes.Buffer
	if pk.FixedHeader.Type == packets.Publish {
		// Room for the whole packet at once: fixed header, topic, packet
		// id, a few properties and the payload (it grew from 64 bytes in
		// two or three copies per message).
		buf = bytes.NewBuffer(make([]byte, 0, 16+len(pk.TopicName)+len(pk.Payload)+publishPropertiesRoom(pk)))
	} else {
		buf = new(bytes.Buffer)
	}
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(buf)
	case packets.Connack:
		err = pk.ConnackEncode(buf)
	case packets.Publish:
		err = pk.PublishEncode(buf)
	case packets.Puback:
		err = pk.PubackEncode(buf)
	case packets.Pubrec:
		err = pk.PubrecEncode(buf)
	case packets.Pubrel:
		err = pk.PubrelEncode(buf)
	case packets.Pubcomp:
		err = pk.PubcompEncode(buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(buf)
	case packets.Suback:
		err = pk.SubackEncode(buf)
	case packets.Unsubscribe:
		err = pk.UnsubscribeEncode(buf)
	case packets.Unsuback:
		err = pk.UnsubackEncode(buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(buf)
	case packets.Pingresp:
		err = pk.PingrespEncode(buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(buf)
	case packets.Auth:
		err = pk.AuthEncode(buf)
	default:
		err = fmt.Errorf("%w: %v", packets.ErrNoValidPacketAvailable, pk.FixedHeader.Type)
	}
	if err != nil {
		return pk, nil, err
	}

	if pk.Mods.MaxSize > 0 && uint32(buf.Len()) > pk.Mods.MaxSize {
		return pk, nil, packets.ErrPacketTooLarge // [MQTT-3.1.2-24] [MQTT-3.1.2-25]
	}

	return pk, buf, nil
}

// publishPropertiesRoom is a guess of the room a PUBLISH's properties take
// once encoded: nothing for MQTT 3.1.1, the variable-length ones and a
// little for the fixed-size ones for MQTT 5.
func publishPropertiesRoom(pk packets.Packet) int {
	if pk.ProtocolVersion < 5 {
		return 0
	}
	n := 32 + len(pk.Properties.ContentType) + len(pk.Properties.ResponseTopic) + len(pk.Properties.CorrelationData)
	for _, u := range pk.Properties.User {
		n += 5 + len(u.Key) + len(u.Val)
	}
	return n
}

func (cl *Client) flushOutbuf() (err error) {
	if cl.Net.outbuf == nil {
		return
	}

	cl.Net.deferredBy = nil
	_, err = cl.Net.outbuf.WriteTo(cl.Net.Conn)
	if err == nil {
		// Kept for the next batch (it grew to a batch's size in several
		// copies each time); WriteTo has emptied it.
		if cl.Net.outbuf.Cap() <= maxSpareOutbuf {
			cl.Net.spare = cl.Net.outbuf
		}
		cl.Net.outbuf = nil
	}
	return
}

// maxSpareOutbuf is the largest outbuf kept for the next batch.
const maxSpareOutbuf = 64 * 1024

// flushingReader is what a client's bufio.Reader reads from: before it
// goes to the socket (and may wait there), the messages this client's
// packets left held back in their subscribers' outbufs are written
// (writeDeferred), so none waits for the publisher's next packet.
type flushingReader struct {
	cl *Client
	r  io.Reader
}

func (f flushingReader) Read(p []byte) (int, error) {
	f.cl.flushDeferred()
	return f.r.Read(p)
}

// writeDeferred adds a packet for the client (a subscriber) to its
// outbuf without writing it, for its publisher from, which is reading
// more packets already buffered: from writes the batch (one write(2) for
// several packets, flushDeferred) before it next reads its socket, or
// when it has nothing more buffered (publishToSubscribersFrom). Queued to
// WriteLoop instead, each packet woke the subscriber's write goroutine
// (InlineClientWrites, patch 52 in ledge's LEDGE.md). It reports false,
// having done nothing, when the packet must go another way: something
// queued for the client or being written, a connection without a raw
// socket, or an outbuf that another publisher's or WriteLoop's bytes hold.
func (cl *Client) writeDeferred(pk packets.Packet, from *Client) bool {
	if atomic.LoadInt32(&cl.State.outboundQty) != 0 || cl.Net.Conn == nil {
		return false
	}
	if _, ok := cl.Net.Conn.(syscall.Conn); !ok {
		return false
	}
	if !cl.TryLock() {
		return false
	}
	defer cl.Unlock()
	if len(cl.State.outbound) != 0 || atomic.LoadInt32(&cl.State.outboundQty) != 0 || cl.Closed() {
		return false
	}
	if cl.Net.outbuf != nil && cl.Net.deferredBy != from {
		return false
	}
	pk, buf, err := cl.encodePacket(pk)
	if err != nil {
		return false // queued: WritePacket reports the error as before
	}
	if cl.Net.outbuf == nil {
		cl.Net.outbuf, cl.Net.spare = cl.Net.spare, nil
		if cl.Net.outbuf == nil {
			cl.Net.outbuf = new(bytes.Buffer)
		}
		cl.Net.deferredBy = from
		from.State.deferMu.Lock()
		from.State.deferred = append(from.State.deferred, cl)
		from.State.deferMu.Unlock()
	}
	cl.Net.outbuf.Write(buf.Bytes())
	cl.packetSent(pk, buf.Bytes(), int64(buf.Len()))
	if cl.Net.outbuf.Len() >= cl.ops.options.ClientNetWriteBufferSize {
		cl.flushHeld()
	}
	return true
}

// flushDeferred writes what this client's messages left in its
// subscribers' outbufs (writeDeferred).
func (cl *Client) flushDeferred() {
	cl.State.deferMu.Lock()
	subs := cl.State.deferred
	cl.State.deferred = nil
	cl.State.deferMu.Unlock()
	if len(subs) == 0 {
		return
	}
	for i, sub := range subs {
		sub.flushDeferredBy(cl)
		subs[i] = nil
	}
	cl.State.deferMu.Lock()
	if cl.State.deferred == nil {
		cl.State.deferred = subs[:0] // kept for the next batch
	}
	cl.State.deferMu.Unlock()
}

// flushDeferredBy writes the client's outbuf if it holds from's batch.
func (cl *Client) flushDeferredBy(from *Client) {
	if !cl.TryLock() {
		// WriteLoop is writing (a packet queued after the batch, which it
		// writes after the batch), or someone is deciding: make sure
		// WriteLoop writes outbuf out, whatever it holds by then.
		cl.queueFlushMarker()
		return
	}
	defer cl.Unlock()
	if cl.Net.outbuf == nil || cl.Net.deferredBy != from {
		return // written by WriteLoop meanwhile
	}
	cl.flushHeld()
}

// flushHeld makes one non-blocking write of outbuf (the caller holds the
// client's lock); what the socket does not take is left for WriteLoop.
func (cl *Client) flushHeld() {
	cl.Net.deferredBy = nil
	b := cl.Net.outbuf.Bytes()
	written := 0
	var werr error
	err := errNoRawSocket
	if cl.Net.raw != nil {
		written, werr = cl.Net.raw.writeNow(b)
		err = nil
	} else if sc, ok := cl.Net.Conn.(syscall.Conn); ok {
		if raw, rerr := sc.SyscallConn(); rerr == nil {
			err = raw.Write(func(fd uintptr) bool {
				written, werr = writeNonBlocking(fd, b)
				return true // one attempt: never wait for the socket here
			})
		}
	}
	if err == nil && werr == nil && written == len(b) {
		cl.Net.outbuf.Reset()
		if cl.Net.outbuf.Cap() <= maxSpareOutbuf {
			cl.Net.spare = cl.Net.outbuf
		}
		cl.Net.outbuf = nil
		return
	}
	cl.Net.outbuf.Next(written)
	cl.queueFlushMarker() // WriteLoop writes the rest, or meets the error
}

var errNoRawSocket = errors.New("no raw socket")

// queueFlushMarker asks WriteLoop to write outbuf out; a full queue has
// packets whose writes flush it first.
func (cl *Client) queueFlushMarker() {
	select {
	case cl.State.outbound <- &packets.Packet{FixedHeader: packets.FixedHeader{Type: flushMarker}}:
		atomic.AddInt32(&cl.State.outboundQty, 1)
	default:
	}
}

// writeNonBlocking writes b to a non-blocking socket until it is written
// or the socket takes no more (EAGAIN: no error).
func writeNonBlocking(fd uintptr, b []byte) (written int, err error) {
	for written < len(b) {
		n, err := syscall.Write(int(fd), b[written:])
		if n > 0 {
			written += n
		}
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			return written, nil
		}
		if err != nil {
			return written, err
		}
		if n <= 0 {
			return written, nil
		}
	}
	return written, nil
}
