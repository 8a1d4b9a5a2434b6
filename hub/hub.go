package hub

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"

	"ledge/hub/route"
	"ledge/hub/store"
	"ledge/internal/migrate"
)

// Options are what appliance hands the hub.
type Options struct {
	Config   Config
	DB       *sql.DB
	DataDir  string // certificates go to <DataDir>/hub
	DeviceID string // this appliance; its modules are <DeviceID>/<module>
	Dev      bool   // anonymous clients allowed on loopback
	Logger   *slog.Logger
}

// Hub is the embedded broker with ledge's dialect, routes and queues. See
// the package doc for what is safe concurrently.
type Hub struct {
	cfg      Config
	log      *slog.Logger
	db       *sql.DB
	deviceID string
	dev      bool
	hostname string

	srv       *mqtt.Server
	ids       *identities
	guesses   *guessLimiter
	refusals  *refusalLog
	certs     *certs
	store     *store.Store
	twins     *twins
	listeners []*netListener
	wsl       *wsListener
	wsServer  *http.Server // the optional own WebSocket port
	wsLn      net.Listener

	routes   atomic.Pointer[route.Table]
	defaults atomic.Pointer[storeDefaults]

	sessions sync.Map // *mqtt.Client -> *session, connected or a persistent session kept
	byID     sync.Map // client id -> *session (the live one)
	held     sync.Map // client id -> *session that holds it (live, or persistent and away); change it with hold and release
	heldMu   sync.Mutex
	heldBy   map[string]map[string]struct{} // session.quotaKey() -> client ids it holds in held
	// willsDue are the routes of Wills waiting for their Will Delay, by
	// client id (func()): run when mochi sends the Will or the session
	// expires, dropped when the client is back in time.
	willsDue sync.Map
	persist  *sessionStore
	pending  *pendingConns // connections not authenticated yet
	perID    sync.Map      // identity name (lower case) -> *atomic.Int64 live connections
	presence *presences    // when each identity connected or went away
	connGen  atomic.Pointer[chan struct{}]

	methods methodCalls
	stats   counters
	up      *upstream
	parent  *parentLink // azure upstream with relay: the parent as a full parent; nil otherwise

	pumpsMu sync.Mutex // guards pumps and pumpCtx
	pumps   map[string]*pump
	pumpCtx context.Context
	pumpWG  sync.WaitGroup
}

// inlineClientWrites turns mochi's inline writes on (the benchmarks turn
// it off in a child hub, LEDGE_HUB_INLINE_WRITES=0, to measure it).
var inlineClientWrites = true

// clientReadBuffer and clientWriteBuffer size mochi's per-connection read
// buffer and write batch (0: mochi's 2 KiB).
var clientReadBuffer, clientWriteBuffer = 0, 0

type storeDefaults struct {
	ttl time.Duration
}

// New prepares the hub: schema, identities, certificates, the queue and
// the listening sockets. It starts nothing; a failure leaves nothing open.
func New(ctx context.Context, o Options) (_ *Hub, err error) {
	cfg := o.Config
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.DeviceID == "" {
		return nil, errors.New("hub: device id is empty")
	}
	h := &Hub{cfg: cfg, log: o.Logger, db: o.DB, deviceID: o.DeviceID, dev: o.Dev, pumps: map[string]*pump{}, presence: newPresences(), guesses: newGuessLimiter(), refusals: newRefusalLog()}
	h.hostname = cfg.Hostname
	if h.hostname == "" {
		h.hostname, _ = os.Hostname()
		if h.hostname == "" {
			h.hostname = o.DeviceID
		}
	}
	gen := make(chan struct{})
	h.connGen.Store(&gen)
	h.pending = newPendingConns(cfg.MaxPendingConnections)
	h.defaults.Store(&storeDefaults{ttl: cfg.StoreAndForward.TimeToLive})
	h.methods.calls = map[string]*methodCall{}

	if err := migrate.Apply(ctx, o.DB, "hub", migrations); err != nil {
		return nil, err
	}
	if h.ids, err = loadIdentities(ctx, o.DB); err != nil {
		return nil, err
	}
	h.twins = &twins{db: o.DB}
	h.store, err = store.Open(ctx, store.Options{DB: o.DB, Logger: h.log.With("part", "store"), QuotaBytes: cfg.StoreAndForward.QuotaBytes,
		Dir: o.DataDir, ReserveBytes: cfg.StoreAndForward.ReserveBytes})
	if err != nil {
		return nil, err
	}
	names := append(machineNames(), h.hostname, o.DeviceID, cfg.IoTHubHostname)
	names = append(names, cfg.TLS.ExtraNames...)
	if h.certs, err = loadCerts(filepath.Join(o.DataDir, "hub"), append([]string{h.hostname}, names...), cfg.TLS.ServerValidity, cfg.TLS.RenewBefore); err != nil {
		return nil, err
	}
	if cfg.TLS.ClientCAFile != "" {
		pem, err := os.ReadFile(cfg.TLS.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("hub.tls.clientCAFile: %w", err)
		}
		if !h.certs.caPool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("hub.tls.clientCAFile %s: no PEM certificates", cfg.TLS.ClientCAFile)
		}
	}
	specs := map[string]route.Spec{}
	for n, r := range cfg.Routes {
		specs[n] = route.Spec{Route: r.Route, Priority: r.Priority, TimeToLiveSecs: r.TimeToLiveSecs}
	}
	tbl, err := route.NewTable(specs)
	if err != nil {
		return nil, fmt.Errorf("hub.routes: %w", err)
	}
	h.routes.Store(tbl)

	h.srv = mqtt.New(&mqtt.Options{
		Capabilities: h.capabilities(),
		Logger:       slog.New(levelAtLeast{h.log.With("part", "mqtt").Handler(), slog.LevelError}),
		// No $SYS churn: ledge's stats are read through Stats.
		SysTopicResendInterval: 3600,
		// A publisher's goroutine writes to idle subscribers itself (one
		// non-blocking write, see third_party/mochi/LEDGE.md): no wake-up of
		// the subscriber's write goroutine per message.
		InlineClientWrites:       inlineClientWrites,
		ClientNetReadBufferSize:  clientReadBuffer,
		ClientNetWriteBufferSize: clientWriteBuffer,
	})
	if err := h.srv.AddHook(&hooks{h: h}, nil); err != nil {
		return nil, err
	}
	h.persist = newSessionStore(h)
	if err := h.srv.AddHook(h.persist, nil); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			for _, l := range h.listeners {
				l.l.Close()
			}
		}
	}()
	for _, l := range []struct{ id, addr string }{{"tcp", cfg.Listen.MQTT}, {"tls", cfg.Listen.MQTTS}} {
		if l.addr == "" {
			continue
		}
		nl, err := net.Listen("tcp", l.addr)
		if err != nil {
			return nil, fmt.Errorf("hub listen %s: %w", l.addr, err)
		}
		ln := &netListener{id: l.id, l: nl, pending: h.pending, timeout: cfg.ConnectTimeout, log: h.log}
		if l.id == "tls" {
			ln.tls = h.certs.tlsConfig()
		}
		h.listeners = append(h.listeners, ln)
	}
	h.wsl = &wsListener{done: make(chan struct{})}
	if h.up, err = newUpstream(h, cfg.Upstream); err != nil {
		return nil, err
	}
	if h.up.cfg.Mode == "azure" && h.up.cfg.Relay {
		h.parent = newParentLink(h, h.up.cfg, h.up.tlsCfg)
	}
	for _, l := range h.listeners {
		if err := h.srv.AddListener(l); err != nil {
			return nil, err
		}
	}
	if err := h.srv.AddListener(h.wsl); err != nil {
		return nil, err
	}
	if cfg.Listen.WebSocket != "" {
		if err := h.listenWebSocket(cfg.Listen.WebSocket); err != nil {
			return nil, err
		}
	}
	return h, nil
}

func (h *Hub) capabilities() *mqtt.Capabilities {
	c := mqtt.NewDefaultServerCapabilities()
	c.MaximumClients = int64(h.cfg.MaxClients)
	c.MaximumPacketSize = uint32(h.cfg.MaxMessageBytes + 64*1024) // payload plus topic and properties
	c.MaximumClientWritesPending = int32(h.cfg.MaxPendingWrites)
	c.MaximumInflight = 1024
	// Topic aliases a client may set up towards the hub (announced in
	// CONNACK), as many as mosquitto's default: each holds a topic.
	c.TopicAliasMaximum = 10
	c.MaximumSessionExpiryInterval = 24 * 3600
	c.MaximumMessageExpiryInterval = 24 * 3600
	// Acks carry a reason code and no properties of the packet they answer
	// (MQTT 5 §3.4.2.2: only a reason string and user properties of their
	// own); MQTT.js and paho.golang reject echoed ones.
	c.Compatibilities.NoInheritedPropertiesOnAck = true
	// A retained message without an expiry of its own stays until it is
	// replaced or cleared, as in mosquitto (mochi removed it after
	// MaximumMessageExpiryInterval, a day).
	c.Compatibilities.KeepRetainedWithoutExpiry = true
	return c
}

// Addr returns the bound address of a listener: "tcp" or "tls".
func (h *Hub) Addr(listener string) string {
	for _, l := range h.listeners {
		if l.id == listener {
			return l.l.Addr().String()
		}
	}
	return ""
}

// Run serves until ctx ends, then stops the listeners and clients, the
// delivery pumps and the upstream bridge, and commits what the queue holds.
func (h *Hub) Run(ctx context.Context) error {
	storeCtx, stopStore := context.WithCancel(context.WithoutCancel(ctx))
	storeDone := make(chan error, 1)
	go func() { storeDone <- h.store.Run(storeCtx) }()

	pctx, stopPumps := context.WithCancel(ctx)
	h.startPumps(pctx)

	go h.persist.run()
	if err := h.srv.Serve(); err != nil {
		stopPumps()
		h.persist.close()
		stopStore()
		<-storeDone
		return fmt.Errorf("hub serve: %w", err)
	}
	h.persist.loadDone(h.srv)
	h.log.Info("hub listening", "mqtt", h.Addr("tcp"), "mqtts", h.Addr("tls"), "hostname", h.hostname, "ca", h.certs.CAPath())

	// The bridge outlives the pumps: it disconnects only after they
	// stopped, so no pump is left in a paho Publish on a closed client.
	upCtx, stopUp := context.WithCancel(context.WithoutCancel(ctx))
	upDone := make(chan struct{})
	go func() { defer close(upDone); h.up.run(upCtx) }()
	parentDone := make(chan struct{})
	go func() {
		defer close(parentDone)
		if h.parent != nil {
			h.parent.run(upCtx)
		}
	}()
	var wg sync.WaitGroup
	wg.Go(func() { h.tick(pctx) })
	if h.wsServer != nil {
		wg.Go(func() { h.wsServer.Serve(h.wsLn) })
	}

	<-ctx.Done()
	stopPumps()
	if h.wsServer != nil {
		h.wsServer.Close()
	}
	// mochi's Close waits for every client goroutine, and a pump may be
	// in a write to a client that stopped reading: the stop is bounded so
	// ledge always stops in time, whatever a client does. The queue is
	// committed in any case (nothing acknowledged is lost).
	h.waitBounded("mqtt clients to close", 3*time.Second, func() { h.srv.Close() })
	h.waitBounded("delivery pumps", upstreamWriteTimeout+2*time.Second, func() { h.pumpWG.Wait(); wg.Wait() })
	stopUp()
	h.waitBounded("upstream bridge", 2*time.Second, func() { <-upDone; <-parentDone })
	h.persist.close()
	stopStore()
	err := <-storeDone
	return err
}

// waitBounded runs f and waits for it at most d, then logs and goes on.
func (h *Hub) waitBounded(what string, d time.Duration, f func()) {
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		h.log.Warn("stopping: gave up waiting", "for", what, "after", d)
	}
}

// tick updates rates and renews the server certificate when due.
func (h *Hub) tick(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	lastCheck := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			h.stats.sample(h, now)
			h.refusals.flush(h.log, now)
			h.prunePumps()
			if now.Unix()%10 == 0 {
				h.sweepSessions()
			}
			if now.Sub(lastCheck) > time.Hour {
				lastCheck = now
				if err := h.certs.ensureServer(now); err != nil {
					h.log.Error("renew hub server certificate", "err", err)
				}
			}
		}
	}
}

// sweepSessions forgets sessions of clients that closed without mochi
// calling OnDisconnect (a CONNACK that could not be written) and that no
// persistent session keeps.
func (h *Hub) sweepSessions() {
	h.sessions.Range(func(k, v any) bool {
		s := v.(*session)
		if !s.cl.Closed() {
			return true
		}
		if cur, ok := h.srv.Clients.Get(s.cl.ID); ok && cur == s.cl {
			return true
		}
		h.sessions.Delete(k)
		h.release(s.cl.ID, s)
		h.byID.CompareAndDelete(s.cl.ID, s)
		h.uncountConn(s)
		if s.present.CompareAndSwap(true, false) {
			h.presence.disconnect(s.name)
		}
		return true
	})
}

// connChanged returns a channel closed at the next connect or subscribe.
func (h *Hub) connChanged() <-chan struct{} { return *h.connGen.Load() }

func (h *Hub) signalConn() {
	gen := make(chan struct{})
	old := h.connGen.Swap(&gen)
	close(*old)
}

// CAPath is the hub CA certificate (PEM) clients trust for TLS.
func (h *Hub) CAPath() string { return h.certs.CAPath() }

// ServerTLSConfig is a TLS server configuration with the hub's
// certificate (signed by the CA at CAPath, renewed in place), for other
// listeners of the appliance such as the dashboard's HTTPS port.
func (h *Hub) ServerTLSConfig() *tls.Config { return h.certs.webTLSConfig() }

// Hostname is the name clients connect to and sign tokens for.
func (h *Hub) Hostname() string { return h.hostname }

// DeviceID is this appliance's device id.
func (h *Hub) DeviceID() string { return h.deviceID }

// Ports are the bound MQTT ports (0 when a listener is off).
type Ports struct {
	MQTT  int `json:"mqtt"`
	MQTTS int `json:"mqtts"`
	// MQTTAddr and MQTTSAddr are the bound addresses ("127.0.0.1:1883",
	// "[::]:8883"; "" when off).
	MQTTAddr  string `json:"mqttAddr"`
	MQTTSAddr string `json:"mqttsAddr"`
}

// Ports returns the bound MQTT ports.
func (h *Hub) Ports() Ports {
	port := func(id string) int {
		_, p, err := net.SplitHostPort(h.Addr(id))
		if err != nil {
			return 0
		}
		var n int
		fmt.Sscan(p, &n)
		return n
	}
	return Ports{MQTT: port("tcp"), MQTTS: port("tls"), MQTTAddr: h.Addr("tcp"), MQTTSAddr: h.Addr("tls")}
}

// Healthy reports whether the hub serves: its listeners are open and the
// queue commits.
func (h *Hub) Healthy(ctx context.Context) error {
	st := h.store.Stats()
	if st.LastError != "" {
		return fmt.Errorf("store-and-forward cannot commit: %s", st.LastError)
	}
	if st.Refusing != "" {
		return fmt.Errorf("store-and-forward refuses new messages: %s", st.Refusing)
	}
	if err := h.persist.health(); err != nil {
		return fmt.Errorf("persistent sessions cannot commit: %w", err)
	}
	return h.db.PingContext(ctx)
}

// levelAtLeast drops records below min.
type levelAtLeast struct {
	slog.Handler
	min slog.Level
}

func (l levelAtLeast) Enabled(ctx context.Context, lv slog.Level) bool {
	return lv >= l.min && l.Handler.Enabled(ctx, lv)
}
func (l levelAtLeast) WithAttrs(a []slog.Attr) slog.Handler {
	return levelAtLeast{l.Handler.WithAttrs(a), l.min}
}
func (l levelAtLeast) WithGroup(n string) slog.Handler {
	return levelAtLeast{l.Handler.WithGroup(n), l.min}
}

// Close releases the sockets of a hub that will not Run (Run releases
// them itself). Safe to call more than once.
func (h *Hub) Close() error {
	for _, l := range h.listeners {
		l.l.Close()
	}
	if h.wsLn != nil {
		h.wsLn.Close()
	}
	return nil
}
