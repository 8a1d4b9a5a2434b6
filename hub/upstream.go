package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	pahopackets "github.com/eclipse/paho.mqtt.golang/packets"

	"ledge/hub/azure"
	"ledge/hub/store"
	"ledge/internal/fault"
	"ledge/internal/outage"
	"ledge/internal/redact"
)

// upstream is the bridge to the cloud or a parent hub: it carries the
// $upstream endpoint and the agent's own publishes and subscriptions.
type upstream struct {
	h      *Hub
	cfg    UpstreamConfig
	tlsCfg *tls.Config // to the broker, nil for a plain connection
	cli    paho.Client // nil when no upstream is configured
	// own are the topics this appliance publishes on itself (its state,
	// presence, reported deployment): routed messages never go there.
	own    sync.Map // topic -> struct{}
	warned sync.Map // topic -> struct{}: a routed message refused, logged
	// out tells the log when the broker cannot be reached and when it can
	// again, once per outage.
	out *outage.Log

	mu        sync.Mutex // guards the fields below
	state     string     // disabled, connecting, connected, disconnected
	since     time.Time
	lastError string
	subs      map[string]upSub
	gen       chan struct{} // closed on each state change
	// stopping is set when run ends: the presence is offline from then on
	// (publishPresence no longer says online).
	stopping atomic.Bool
}

type upSub struct {
	qos     byte
	handler func(topic string, payload []byte)
}

// UpstreamStatus is the bridge's state for the dashboard.
type UpstreamStatus struct {
	Mode      string    `json:"mode"`
	Broker    string    `json:"broker,omitempty"`
	State     string    `json:"state"`
	Since     time.Time `json:"since"`
	LastError string    `json:"lastError,omitempty"`
	// Relays are the connections to the parent on behalf of this device's
	// twins, modules and leaf devices (azure mode).
	Relays []RelayStatus `json:"relays,omitempty"`
}

const (
	azureAPIVersion      = "2021-04-12"
	upstreamWriteTimeout = 10 * time.Second
)

func newUpstream(h *Hub, cfg UpstreamConfig) (*upstream, error) {
	u := &upstream{h: h, cfg: cfg, state: "disabled", since: time.Now(), subs: map[string]upSub{}, gen: make(chan struct{})}
	if cfg.Mode == "" {
		return u, nil
	}
	if cfg.DeviceID == "" {
		u.cfg.DeviceID = h.deviceID
	}
	cfg = u.cfg
	brokerURL := cfg.URL
	if brokerURL == "" && cfg.Mode == "azure" {
		brokerURL = "ssl://" + cfg.Host + ":8883"
	}
	u.cfg.URL = brokerURL
	u.out = outage.New(h.log.With("broker", redact.URL(brokerURL)), "upstream", 0)
	o := paho.NewClientOptions().AddBroker(brokerURL)
	for _, b := range cfg.URLs {
		o.AddBroker(b)
	}
	if p := cfg.Presence; p != nil {
		o.SetBinaryWill(p.Topic, p.Offline, 1, true)
		u.own.Store(p.Topic, struct{}{})
	}
	o.SetKeepAlive(cfg.KeepAlive)
	// 3.1.1 only: paho would try 3.1 after a refused CONNECT, and report
	// the broker's answer to that ("unacceptable protocol version")
	// instead of the refusal of the credentials.
	o.SetProtocolVersion(4)
	o.SetCleanSession(true)
	o.SetAutoReconnect(true)
	o.SetConnectRetry(true)
	o.SetConnectRetryInterval(time.Second)
	o.SetMaxReconnectInterval(maxBackoff)
	o.SetConnectTimeout(30 * time.Second)
	// Bounds a Publish that meets a connection lost under it (paho blocks
	// until then), and so how long a stop can wait for a pump.
	o.SetWriteTimeout(upstreamWriteTimeout)
	o.SetOrderMatters(false)
	p, _ := url.Parse(brokerURL)
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.Mode == "azure" {
		tlsCfg.ServerName = cfg.Host
	}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("hub.upstream.caFile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("hub.upstream.caFile %s: no PEM certificates", cfg.CAFile)
		}
		tlsCfg.RootCAs = pool
	}
	if p != nil && (p.Scheme == "ssl" || p.Scheme == "tls" || p.Scheme == "mqtts" || p.Scheme == "wss") {
		o.SetTLSConfig(tlsCfg)
		u.tlsCfg = tlsCfg
	}
	switch cfg.Mode {
	case "azure":
		if _, _, err := azureKey(cfg.DeviceKey); err != nil {
			return nil, err
		}
		o.SetClientID(cfg.DeviceID)
		o.SetCredentialsProvider(func() (string, string) {
			tok, _ := azure.BuildToken(azure.Resource(cfg.Host, cfg.DeviceID, ""), cfg.DeviceKey, time.Now().Add(time.Hour))
			return cfg.Host + "/" + cfg.DeviceID + "/?api-version=" + azureAPIVersion, tok
		})
	default:
		id := cfg.ClientID
		if id == "" {
			id = "ledge-" + h.deviceID
		}
		o.SetClientID(id)
		o.SetUsername(cfg.Username)
		o.SetPassword(cfg.Password)
	}
	o.SetOnConnectHandler(func(c paho.Client) {
		if p := cfg.Presence; p != nil {
			go publishPresence(c, p, &u.stopping)
		}
		u.setState("connected", "")
		u.out.OK()
		u.mu.Lock()
		subs := make(map[string]upSub, len(u.subs))
		for k, v := range u.subs {
			subs[k] = v
		}
		u.mu.Unlock()
		// In order and at once, as a publish that follows (a twin
		// request) expects its answer's subscription to be there; the
		// broker's answers are checked after.
		for f, s := range subs {
			t := c.Subscribe(f, s.qos, func(_ paho.Client, m paho.Message) { s.handler(m.Topic(), m.Payload()) })
			go u.subscribed(c, f, s, t)
		}
	})
	o.SetConnectionLostHandler(func(c paho.Client, err error) {
		u.setState("disconnected", err.Error())
		if !c.IsConnectionOpen() { // not reconnected already
			u.out.Fail("connection lost: " + err.Error())
		}
	})
	// Every failed attempt, the first one at start included, names its
	// reason in the status; the first of an outage is a WARN.
	o.SetConnectionNotificationHandler(func(_ paho.Client, n paho.ConnectionNotification) {
		if f, ok := n.(paho.ConnectionNotificationFailed); ok {
			why := connectError(f.Reason, cfg.Mode)
			u.setState("connecting", why)
			u.out.Fail(why)
		}
	})
	o.SetReconnectingHandler(func(paho.Client, *paho.ClientOptions) { u.setState("connecting", "") })
	u.cli = paho.NewClient(o)
	u.state = "connecting"
	return u, nil
}

// publishPresence marks the appliance online after a connect, until the
// broker acknowledges it (a clustered broker may not take a retained
// message the moment a session starts), unless the link is stopping.
func publishPresence(c paho.Client, p *UpstreamPresence, stopping *atomic.Bool) {
	for range 10 {
		if !c.IsConnectionOpen() || stopping.Load() {
			return
		}
		t := c.Publish(p.Topic, 1, true, p.Online())
		if t.WaitTimeout(5*time.Second) && t.Error() == nil {
			return
		}
		time.Sleep(time.Second)
	}
}

// publishOffline marks the appliance offline on a clean stop: the
// DISCONNECT that follows makes the broker discard the last will (MQTT
// 3.1.1, 3.14.4), which covers only a connection that dies. Bounded: a
// stop does not wait for a broker that does not answer (the will, which
// it then keeps, says offline when the connection drops).
func (u *upstream) publishOffline() {
	p := u.cfg.Presence
	if p == nil || !u.cli.IsConnectionOpen() {
		return
	}
	u.cli.Publish(p.Topic, 1, true, p.Offline).WaitTimeout(2 * time.Second)
}

// connectError says why a connection attempt failed; a refusal of the
// credentials names the keys that hold them (never their values).
func connectError(err error, mode string) string {
	why := err.Error()
	if errors.Is(err, pahopackets.ErrorNetworkError) {
		// The client's "network Error : " says nothing the cause does not.
		why = strings.TrimPrefix(why, pahopackets.ErrorNetworkError.Error()+" : ")
	}
	if errors.Is(err, pahopackets.ErrorRefusedBadUsernameOrPassword) || errors.Is(err, pahopackets.ErrorRefusedNotAuthorised) {
		keys := "hub.upstream.username and password"
		if mode == "azure" {
			keys = "hub.upstream.deviceId and deviceKey (and that the device exists there)"
		}
		why = "the broker refuses the credentials (" + why + "): check " + keys
	}
	return why
}

func azureKey(k string) ([]byte, string, error) {
	if _, err := azure.BuildToken("x/devices/y", k, time.Now()); err != nil {
		return nil, "", fmt.Errorf("hub.upstream.deviceKey: %w", err)
	}
	return nil, "", nil
}

func (u *upstream) setState(state, lastErr string) {
	u.mu.Lock()
	if u.state != state {
		u.state, u.since = state, time.Now()
	}
	if lastErr != "" {
		u.lastError = lastErr
	} else if state == "connected" {
		u.lastError = "" // the outage's reason was shown while it lasted
	}
	old := u.gen
	u.gen = make(chan struct{})
	u.mu.Unlock()
	close(old)
}

// run connects (retrying with back-off) until ctx ends. In azure mode it
// reconnects with a fresh token every 50 minutes.
func (u *upstream) run(ctx context.Context) {
	if u.cli == nil {
		return
	}
	u.cli.Connect() // retries in the background (ConnectRetry)
	refresh := time.NewTicker(50 * time.Minute)
	defer refresh.Stop()
	for {
		select {
		case <-ctx.Done():
			u.stopping.Store(true)
			u.publishOffline()
			u.cli.Disconnect(250)
			u.setState("disconnected", "")
			return
		case <-refresh.C:
			if u.cfg.Mode == "azure" && u.cli.IsConnected() {
				u.cli.Disconnect(250)
				u.cli.Connect()
			}
		}
	}
}

func (u *upstream) connected() bool { return u.cli != nil && u.cli.IsConnectionOpen() }

func (u *upstream) changed() <-chan struct{} {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.gen
}

func (u *upstream) status() UpstreamStatus {
	u.mu.Lock()
	defer u.mu.Unlock()
	return UpstreamStatus{Mode: u.cfg.Mode, Broker: redact.URL(u.cfg.URL), State: u.state, Since: u.since, LastError: u.lastError,
		Relays: u.h.parent.relays()}
}

// topic is where a routed message goes upstream.
func (u *upstream) topic(appProps, sys map[string]string) string {
	out := map[string]string{}
	for k, v := range sys {
		switch k {
		case "connectionDeviceId", "connectionModuleId", "outputName", "connectionAuthMethod", "inputName":
		default:
			out[k] = v
		}
	}
	if u.cfg.Mode == "azure" {
		return azure.TelemetryTopic(u.cfg.DeviceID, "", appProps, out)
	}
	r := strings.NewReplacer("{deviceId}", u.h.deviceID, "{sourceDevice}", levelSafe(sys["connectionDeviceId"]),
		"{sourceModule}", levelSafe(sys["connectionModuleId"]), "{output}", levelSafe(sys["outputName"]),
		"{properties}", string(azure.AppendBag(nil, appProps, out)))
	return r.Replace(u.cfg.TopicTemplate)
}

// levelEscaper keeps a value a message chooses (a module's output name)
// inside the template's level: no level separator, no wildcard (a
// publish on a topic with one is a protocol error, and the broker drops
// the bridge, again and again), '%' so that the encoding reads back.
var levelEscaper = strings.NewReplacer("%", "%25", "/", "%2F", "+", "%2B", "#", "%23", "\x00", "%00")

func levelSafe(v string) string { return levelEscaper.Replace(v) }

// reserved says why a routed message may not go to topic, or "": the
// appliance takes its deployments from it (a module's telemetry there
// would deploy), or publishes its own state there.
func (u *upstream) reserved(topic string) string {
	if _, ok := u.own.Load(topic); ok {
		return "this appliance publishes its own state there"
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	for f := range u.subs {
		if matchLevels(strings.Split(f, "/"), topic) {
			return "this appliance subscribes to it (" + f + "): its deployments come from there"
		}
	}
	return ""
}

// sendBatch publishes entries with QoS 1 and waits for their acks in
// order; it returns how many from the start were acknowledged.
func (u *upstream) sendBatch(ctx context.Context, entries []store.Entry) (int, error) {
	toks := make([]paho.Token, 0, len(entries))
	for i, e := range entries {
		m, err := decodeMessage(e.Data)
		if err != nil {
			toks = append(toks, nil)
			continue
		}
		if ctx.Err() != nil {
			entries = entries[:i]
			break
		}
		topic := u.topic(m.App, m.Sys)
		if why := u.reserved(topic); why != "" {
			if _, seen := u.warned.LoadOrStore(topic, struct{}{}); !seen {
				u.h.log.Warn("routed message dropped: its upstream topic is reserved", "topic", topic, "reason", why,
					"source", m.Sys["connectionDeviceId"]+"/"+m.Sys["connectionModuleId"], "output", m.Sys["outputName"])
			}
			u.h.stats.drop(dropReservedTopic)
			toks = append(toks, nil) // acked: dropped, not retried
			continue
		}
		toks = append(toks, u.cli.Publish(topic, 1, false, m.Body))
	}
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	for i, t := range toks {
		if t == nil {
			continue // corrupt: acked so it does not block
		}
		select {
		case <-t.Done():
		case <-ctx.Done():
			return i, ctx.Err() // stopping: the rest goes back to the queue
		case <-timeout.C:
			return i, errors.New("upstream: no PUBACK within 30s")
		}
		if err := t.Error(); err != nil {
			return i, fmt.Errorf("upstream: %w", err)
		}
	}
	return len(entries), nil
}

// PublishUpstream publishes straight to the upstream broker (the agent's
// reported state), not through the queue: it fails with
// fault.Unavailable when the bridge is down.
func (h *Hub) PublishUpstream(ctx context.Context, topic string, payload []byte, qos byte, retain bool) error {
	u := h.up
	if u.cli == nil {
		return fault.New(fault.Unavailable, "no upstream configured (hub.upstream.mode)")
	}
	if !u.connected() {
		return fault.New(fault.Unavailable, "upstream %s is not connected", u.cfg.URL)
	}
	u.own.Store(topic, struct{}{})
	t := u.cli.Publish(topic, qos, retain, payload)
	select {
	case <-t.Done():
		if err := t.Error(); err != nil {
			return fault.New(fault.Unavailable, "upstream publish: %v", err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// SubscribeUpstream subscribes on the upstream broker, now if connected
// and again after every reconnect (the agent's deployment topic, where a
// retained manifest waits). handler runs on paho's goroutines. The
// returned function unsubscribes.
func (h *Hub) SubscribeUpstream(filter string, qos byte, handler func(topic string, payload []byte)) (func(), error) {
	u := h.up
	if u.cli == nil {
		return nil, fault.New(fault.Unavailable, "no upstream configured (hub.upstream.mode)")
	}
	if !validFilter(filter) {
		return nil, fault.New(fault.Invalid, "upstream subscription %q is not a topic filter", filter)
	}
	u.mu.Lock()
	u.subs[filter] = upSub{qos: qos, handler: handler}
	u.mu.Unlock()
	if u.connected() {
		s := upSub{qos: qos, handler: handler}
		t := u.cli.Subscribe(filter, qos, func(_ paho.Client, m paho.Message) { handler(m.Topic(), m.Payload()) })
		go u.subscribed(u.cli, filter, s, t)
	}
	return func() {
		u.mu.Lock()
		delete(u.subs, filter)
		u.mu.Unlock()
		if u.connected() {
			u.cli.Unsubscribe(filter)
		}
	}, nil
}

// subscribed checks the broker's answer t to the subscription to filter
// and, while the broker refuses (SUBACK 0x80: a clustered broker refuses
// subscriptions while its store elects a leader after a node died) or
// does not answer, subscribes again with back-off (1 s to 30 s) as long
// as the connection is up and the subscription wanted. A failure is
// logged once and shows in the upstream's status until the broker
// takes it.
func (u *upstream) subscribed(c paho.Client, filter string, s upSub, t paho.Token) {
	wait := time.Second
	failed := false
	for {
		var why string
		switch {
		case !t.WaitTimeout(2 * upstreamWriteTimeout):
			why = "no answer from the broker"
		case t.Error() != nil:
			why = t.Error().Error()
		case subscribeRefused(t, filter):
			why = "refused by the broker"
		}
		if why == "" {
			if failed {
				u.h.log.Info("upstream subscription taken", "filter", filter)
				u.clearError("subscription to " + filter)
			}
			return
		}
		u.mu.Lock()
		_, wanted := u.subs[filter]
		u.mu.Unlock()
		if !wanted || !c.IsConnectionOpen() {
			return
		}
		if !failed {
			failed = true
			u.h.log.Warn("upstream subscription failed: trying again", "filter", filter, "reason", why, "retryIn", wait)
		}
		u.setState("connected", "subscription to "+filter+" "+why)
		time.Sleep(wait)
		wait = min(2*wait, 30*time.Second)
		t = c.Subscribe(filter, s.qos, func(_ paho.Client, m paho.Message) { s.handler(m.Topic(), m.Payload()) })
	}
}

// subscribeRefused reports whether the broker refused the subscription
// to filter that t stands for (SUBACK return code 0x80).
func subscribeRefused(t paho.Token, filter string) bool {
	st, ok := t.(*paho.SubscribeToken)
	if !ok {
		return false
	}
	q, ok := st.Result()[filter]
	return ok && q >= 0x80
}

// clearError forgets the last error when it begins with prefix (it was
// about something that now works).
func (u *upstream) clearError(prefix string) {
	u.mu.Lock()
	if strings.HasPrefix(u.lastError, prefix) {
		u.lastError = ""
	}
	u.mu.Unlock()
}

// UpstreamConnected reports whether the bridge is up.
func (h *Hub) UpstreamConnected() bool { return h.up.connected() }

// Upstream is the bridge's state (the Upstream of Stats, without the rest).
func (h *Hub) Upstream() UpstreamStatus { return h.up.status() }
