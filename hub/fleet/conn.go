package fleet

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"ledge/internal/redact"
)

// ConnConfig is how the CLI and the controller reach the fleet's broker
// (their own credentials, not a device's).
type ConnConfig struct {
	// URLs of the broker (the nodes of a cluster, tried in turn):
	// tcp://, ssl://, ws://, wss://.
	URLs     []string
	Username string
	Password string
	// CAFile verifies the broker's certificate (default: system roots).
	CAFile   string
	ClientID string
	Topics   Topics
	// Will is published (retained) by the broker when the connection dies.
	WillTopic   string
	WillPayload []byte
	// OnConnect runs after every (re)connect, subscriptions restored.
	OnConnect func(*Conn)
	// ConnectTimeout bounds the first connect (default 10s).
	ConnectTimeout time.Duration
	// ProbeTimeout is how long a broker node may take to deliver the
	// connection's retained probe before it counts as one that does not
	// serve what it retains (default 5s; a node answers its own probe in
	// milliseconds; see [Conn.probe]).
	ProbeTimeout time.Duration
	// Log says when a broker node is skipped or a connection is not
	// usable (default: discarded).
	Log *slog.Logger
}

// Conn is a connection to the fleet's broker with a [View] of the fleet's
// retained messages. Safe for concurrent use.
type Conn struct {
	cfg  ConnConfig
	cli  paho.Client
	view *View
	log  *slog.Logger

	synced chan error  // the first connection's sync, for Dial
	ready  atomic.Bool // Dial returned a connection

	mu      sync.Mutex           // guards the fields below
	lastErr error                // why the last connection could not be synced
	current string               // the broker URL connected (or being tried)
	netConn net.Conn             // the network connection to it
	skipped map[string]time.Time // broker URL -> skipped until
	closed  bool
}

// skipFor is how long a broker node that failed the probe is passed over.
const skipFor = time.Minute

// errRefused is a subscription the broker kept refusing (SUBACK 0x80).
var errRefused = errors.New("the broker refused it (SUBACK 0x80; its ACL?)")

// errStaleNode is a broker node that acknowledged the probe and did not
// deliver it to a new subscription.
var errStaleNode = errors.New("the broker acknowledged a retained message and did not deliver it to a new subscription")

// Dial connects and subscribes to the fleet's topics; it returns once the
// first connection is synced (every retained message of the fleet in the
// view) or fails. It keeps reconnecting afterwards.
func Dial(ctx context.Context, cfg ConnConfig) (*Conn, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("fleet: no broker URL")
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	if cfg.ProbeTimeout == 0 {
		cfg.ProbeTimeout = 5 * time.Second
	}
	c := &Conn{cfg: cfg, view: newView(cfg.Topics), log: cfg.Log, synced: make(chan error, 1), skipped: map[string]time.Time{}}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	o, err := cfg.options(cfg.ClientID)
	if err != nil {
		return nil, err
	}
	if cfg.WillTopic != "" {
		o.SetBinaryWill(cfg.WillTopic, cfg.WillPayload, 1, true)
	}
	o.SetCustomOpenConnectionFn(c.open)
	o.SetOnConnectHandler(func(cli paho.Client) { go c.onConnect(cli) })
	o.SetConnectionLostHandler(func(paho.Client, error) { c.view.connected(false) })
	o.SetReconnectingHandler(func(paho.Client, *paho.ClientOptions) { c.view.connected(false) })
	c.cli = paho.NewClient(o)
	fail := func(err error) (*Conn, error) {
		c.Close()
		return nil, err
	}
	tok := c.cli.Connect()
	select {
	case <-tok.Done():
	case <-time.After(cfg.ConnectTimeout):
		err := fmt.Errorf("broker %v: no connection within %s", redactAll(cfg.URLs), cfg.ConnectTimeout)
		if why := cfg.whyNot(); why != nil {
			err = fmt.Errorf("%w (%w)", err, why)
		}
		return fail(err)
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	if err := tok.Error(); err != nil {
		return fail(fmt.Errorf("broker %v: %w", redactAll(cfg.URLs), err))
	}
	// A sync takes at most a minute per node (subscriptions refused for
	// 30s, the probe); then a node that fails it is passed over.
	limit := time.Duration(len(cfg.URLs)) * (time.Minute + cfg.ConnectTimeout + cfg.ProbeTimeout)
	select {
	case err := <-c.synced:
		if err != nil {
			return fail(fmt.Errorf("broker %s: %w", redact.URL(c.broker()), err))
		}
	case <-time.After(limit):
		return fail(fmt.Errorf("broker %v: no usable connection within %s%s", redactAll(cfg.URLs), limit, c.lastError()))
	case <-ctx.Done():
		return fail(fmt.Errorf("broker %v: %w%s", redactAll(cfg.URLs), ctx.Err(), c.lastError()))
	}
	c.ready.Store(true)
	return c, nil
}

// ErrRefused is a broker's answer to a connection it turns down: its
// credentials (or the client's id) are not allowed.
var ErrRefused = errors.New("the broker refused the connection")

// whyNot says why the brokers do not take a connection (nil when it
// cannot tell): paho retries a refused connection without saying why,
// and a bad password looked like a broker that does not answer. One
// attempt, without retries, a few seconds at most.
func (cfg ConnConfig) whyNot() error {
	o, err := cfg.options(cfg.ClientID + "-why")
	if err != nil {
		return nil
	}
	o.SetConnectRetry(false)
	o.SetAutoReconnect(false)
	cli := paho.NewClient(o)
	tok := cli.Connect()
	if !tok.WaitTimeout(5 * time.Second) {
		return nil
	}
	if err = tok.Error(); err == nil {
		cli.Disconnect(0)
		return nil
	}
	if errors.Is(err, packets.ErrorRefusedNotAuthorised) || errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) ||
		errors.Is(err, packets.ErrorRefusedIDRejected) {
		return fmt.Errorf("%w: %w", ErrRefused, err)
	}
	return err
}

// lastError says why the last connection could not be synced ("" if
// none failed).
func (c *Conn) lastError() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lastErr == nil {
		return ""
	}
	return " (last: " + c.lastErr.Error() + ")"
}

func redactAll(urls []string) []string {
	out := make([]string, len(urls))
	for i, u := range urls {
		out[i] = redact.URL(u)
	}
	return out
}

// open opens the network connection to a broker node for paho, passing
// over a node that failed the probe lately (unless every node did).
func (c *Conn) open(u *url.URL, o paho.ClientOptions) (net.Conn, error) {
	key := u.String()
	c.mu.Lock()
	if until, ok := c.skipped[key]; ok && time.Now().Before(until) && !c.allSkipped() {
		c.mu.Unlock()
		return nil, fmt.Errorf("%s passed over until %s: %w", redact.URL(key), until.Format(time.TimeOnly), errStaleNode)
	}
	c.current = key
	c.mu.Unlock()
	nc, err := dialBroker(u, o)
	if err == nil {
		c.mu.Lock()
		c.netConn = nc
		c.mu.Unlock()
	}
	return nc, err
}

// dialBroker opens the network connection to u as paho does.
func dialBroker(u *url.URL, o paho.ClientOptions) (net.Conn, error) {
	d := &net.Dialer{Timeout: o.ConnectTimeout}
	switch u.Scheme {
	case "ws", "wss":
		du := *u
		du.User = nil
		var tlsCfg *tls.Config
		if u.Scheme == "wss" {
			tlsCfg = o.TLSConfig
		}
		return paho.NewWebsocket(du.String(), tlsCfg, o.ConnectTimeout, o.HTTPHeaders, o.WebsocketOptions)
	case "ssl", "tls", "mqtts", "tcps":
		return tls.DialWithDialer(d, "tcp", u.Host, o.TLSConfig)
	default:
		return d.Dial("tcp", u.Host)
	}
}

// allSkipped reports whether every node is passed over now. c.mu held.
func (c *Conn) allSkipped() bool {
	n := 0
	now := time.Now()
	for _, until := range c.skipped {
		if now.Before(until) {
			n++
		}
	}
	return n >= len(c.cfg.URLs)
}

func (c *Conn) broker() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.current
}

// onConnect syncs a new connection. A node that fails the probe is
// passed over (another node is tried) unless every node failed it; a
// connection that cannot be synced is dropped and made again. Until it
// is synced, the view counts as disconnected.
func (c *Conn) onConnect(cli paho.Client) {
	c.mu.Lock()
	broker, nc := c.current, c.netConn
	c.mu.Unlock()
	start := time.Now()
	c.log.Debug("broker connected: syncing", "broker", redact.URL(broker))
	c.view.resync()
	err := c.sync(cli)
	complete := err == nil
	if errors.Is(err, errStaleNode) {
		c.mu.Lock()
		c.skipped[broker] = time.Now().Add(skipFor)
		all := c.allSkipped()
		c.mu.Unlock()
		if !all {
			c.log.Warn("broker node passed over: it did not deliver a retained message it acknowledged (a cluster node whose retained messages are behind); trying another",
				"broker", redact.URL(broker), "waited", c.cfg.ProbeTimeout, "for", skipFor)
			c.reconnect(nc)
			return
		}
		c.log.Warn("no broker node delivers the retained messages it acknowledges: going on with this one; retained messages may be missing from the fleet's view "+
			"(or the broker's ACL does not let this user publish and subscribe to "+c.cfg.Topics.Prefix+"/fleet/#: check the user and --prefix)",
			"broker", redact.URL(broker), "waited", c.cfg.ProbeTimeout)
		err = nil
	}
	if err != nil {
		c.mu.Lock()
		c.lastErr = err
		c.mu.Unlock()
		if !c.ready.Load() && errors.Is(err, errRefused) {
			c.signal(err) // Dial fails with it: the broker said no
			return
		}
		c.log.Warn("broker connection not usable: connecting again", "broker", redact.URL(broker), "err", err)
		if cli.IsConnectionOpen() {
			c.reconnect(nc)
		} // else lost while syncing: paho connects again, and this runs again
		return
	}
	gone := 0
	if complete {
		gone = c.view.prune()
	}
	c.log.Debug("broker synced", "broker", redact.URL(broker), "took", time.Since(start).Round(time.Millisecond), "gone", gone)
	c.view.connected(true)
	if c.cfg.OnConnect != nil {
		c.cfg.OnConnect(c)
	}
	c.signal(nil)
}

func (c *Conn) signal(err error) {
	select {
	case c.synced <- err:
	default:
	}
}

// reconnect drops the network connection nc under paho, which connects
// again (it tries the nodes in turn, open passing over the skipped
// ones). nc is one that was never synced: nothing was published on it,
// and its last will (if any) says what the broker said when the
// connection before it was lost. When nc is no longer the current one
// (it was lost meanwhile), the current one is left alone.
func (c *Conn) reconnect(nc net.Conn) {
	c.mu.Lock()
	current, closed := c.netConn == nc, c.closed
	c.mu.Unlock()
	if closed || nc == nil {
		return
	}
	if current {
		c.view.connected(false)
	}
	// A read that fails, not a Close: paho takes a read on a closed
	// connection for its own Disconnect and would notice only when its
	// keepalive fails (about 30 s later).
	nc.SetReadDeadline(time.Now())
}

// sync subscribes to the fleet's topics and probes the broker node (see
// [probe]); then it subscribes again, and once the probe is back a
// second time the view holds every retained message of the fleet.
//
// The second reading closes a gap a clustered broker leaves: nats-server
// hands a new subscription the retained messages its per-node index
// holds, and that index learns of a stored message a moment later; a
// message stored in that moment, before the subscription took effect,
// comes neither retained nor live (a definition deployed while a
// controller connected was never seen). Once the probe is back, the
// index holds everything stored before it, and the subscriptions were
// live before it was published: what the first reading missed, the
// second has. It costs a second transfer of the fleet's retained
// messages per connection.
func (c *Conn) sync(cli paho.Client) error {
	subscribeAll := func() error {
		for _, f := range c.cfg.Topics.Filters() {
			if err := c.subscribe(cli, f, 1, c.onMessage); err != nil {
				return err
			}
		}
		return nil
	}
	if err := subscribeAll(); err != nil {
		return err
	}
	p, err := c.newProbe(cli)
	if err != nil {
		return err
	}
	defer p.clear()
	if err := p.await(); err != nil {
		return err
	}
	if err := subscribeAll(); err != nil {
		return err
	}
	if err := p.await(); err != nil {
		return fmt.Errorf("the probe did not come back the second time: %w", err)
	}
	return nil
}

// subscribe subscribes and checks the broker's answer; a
// refused subscription is tried again for up to 30 s (a clustered broker
// refuses one while its store elects a new leader after a node died).
func (c *Conn) subscribe(cli paho.Client, filter string, qos byte, h paho.MessageHandler) error {
	wait := 250 * time.Millisecond
	deadline := time.Now().Add(30 * time.Second)
	for {
		t := cli.Subscribe(filter, qos, h)
		if !t.WaitTimeout(20 * time.Second) {
			return fmt.Errorf("subscribe %s: no answer within 20s", filter)
		}
		if err := t.Error(); err != nil {
			return fmt.Errorf("subscribe %s: %w", filter, err)
		}
		if !Refused(t, filter) {
			return nil
		}
		if time.Now().After(deadline) || !cli.IsConnectionOpen() {
			return fmt.Errorf("subscribe %s: %w", filter, errRefused)
		}
		c.log.Debug("subscription refused: trying again", "filter", filter, "in", wait)
		time.Sleep(wait)
		wait = min(2*wait, 4*time.Second)
	}
}

// Refused reports whether the broker refused the subscription to filter
// that t stands for (SUBACK return code 0x80).
func Refused(t paho.Token, filter string) bool {
	st, ok := t.(*paho.SubscribeToken)
	if !ok {
		return false
	}
	q, ok := st.Result()[filter]
	return ok && q >= 0x80
}

// probe is a retained message (a random text) on a topic no one used
// before, <prefix>/fleet/sync/<client>/<random>: subscribed to, the
// broker must hand it back. A broker delivers a retained message to a
// subscription made after it acknowledged it [MQTT-3.3.1-6], after the
// retained messages of the session's earlier subscriptions (it handles
// a session's packets in order): once the probe is back, those have all
// arrived. A broker node that acknowledged the probe and does not
// deliver it within ProbeTimeout serves an outdated set of retained
// messages: nats-server does that on a node whose retained-message
// index was kept by a node that died (docs/fleet.md). That is
// errStaleNode.
type probe struct {
	c     *Conn
	cli   paho.Client
	topic string
	text  string
	back  chan struct{}
}

// newProbe publishes the probe and waits for the broker's ack.
func (c *Conn) newProbe(cli paho.Client) (*probe, error) {
	text := rand.Text()
	p := &probe{c: c, cli: cli, topic: c.cfg.Topics.p() + "/fleet/sync/" + c.cfg.ClientID + "/" + text, text: text, back: make(chan struct{}, 1)}
	if t := cli.Publish(p.topic, 1, true, []byte(text)); !t.WaitTimeout(15*time.Second) || t.Error() != nil {
		return nil, fmt.Errorf("publish %s: not acknowledged within 15s: %v", p.topic, t.Error())
	}
	return p, nil
}

// clear removes the probe from the broker.
func (p *probe) clear() { p.cli.Publish(p.topic, 1, true, nil).WaitTimeout(5 * time.Second) }

// await subscribes to the probe until the broker hands it back retained
// (again every half second), for up to ProbeTimeout.
func (p *probe) await() error {
	select {
	case <-p.back:
	default:
	}
	h := func(_ paho.Client, m paho.Message) {
		// The live copy (to <prefix>/fleet/#) is not retained.
		if m.Retained() && string(m.Payload()) == p.text {
			select {
			case p.back <- struct{}{}:
			default:
			}
		}
	}
	deadline := time.Now().Add(p.c.cfg.ProbeTimeout)
	for {
		// QoS 0: a retained message comes to a subscription of any QoS,
		// and the broker keeps no state for it (nats-server makes a
		// JetStream consumer for each QoS 1 subscription).
		if err := p.c.subscribe(p.cli, p.topic, 0, h); err != nil {
			return err
		}
		select {
		case <-p.back:
			p.cli.Unsubscribe(p.topic).WaitTimeout(5 * time.Second)
			return nil
		case <-time.After(500 * time.Millisecond):
		}
		p.cli.Unsubscribe(p.topic).WaitTimeout(5 * time.Second)
		if time.Now().After(deadline) {
			return errStaleNode
		}
	}
}

// Check reads back what the broker retains on topics now, on this
// connection: it publishes a new probe, then, for each batch of up to 256
// topics, subscribes to them (QoS 0), waits for the probe (it comes after
// their retained messages) and unsubscribes (paho matches every message
// against every subscription: a few hundred at a time cost little). A
// topic missing from the answer holds nothing. A probe that does not
// come back means the node no longer serves what it retains (a node of
// its cluster died): the connection is made again on another node, and
// Check fails with errStaleNode.
func (c *Conn) Check(ctx context.Context, topics []string) (map[string][]byte, error) {
	cli := c.cli
	if !cli.IsConnectionOpen() {
		return nil, errors.New("not connected")
	}
	want := make(map[string]bool, len(topics))
	for _, t := range topics {
		want[t] = true
	}
	var mu sync.Mutex
	got := map[string][]byte{}
	h := func(_ paho.Client, m paho.Message) {
		if m.Retained() && want[m.Topic()] {
			// Received on the fleet's subscription too (paho hands a
			// message to every matching one): counted there.
			c.view.readBack(m.Topic(), m.Payload())
			mu.Lock()
			got[m.Topic()] = bytes.Clone(m.Payload())
			mu.Unlock()
		}
	}
	p, err := c.newProbe(cli)
	if err != nil {
		return nil, err
	}
	defer p.clear()
	const batch = 256
	for i := 0; i < len(topics); i += batch {
		part := topics[i:min(i+batch, len(topics))]
		filters := make(map[string]byte, len(part))
		for _, t := range part {
			filters[t] = 0
		}
		t := cli.SubscribeMultiple(filters, h)
		select {
		case <-t.Done():
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if err := t.Error(); err != nil {
			return nil, fmt.Errorf("subscribe to read back: %w", err)
		}
		err := p.await()
		cli.Unsubscribe(part...).WaitTimeout(5 * time.Second)
		if errors.Is(err, errStaleNode) {
			c.passOver()
		}
		if err != nil {
			return nil, err
		}
	}
	mu.Lock()
	defer mu.Unlock()
	return maps.Clone(got), nil
}

// passOver drops the connection to the current node, which no longer
// serves what it retains, and passes over it for a while (unless every
// node is passed over).
func (c *Conn) passOver() {
	c.mu.Lock()
	broker, nc := c.current, c.netConn
	c.skipped[broker] = time.Now().Add(skipFor)
	all := c.allSkipped()
	c.mu.Unlock()
	if all {
		return
	}
	c.log.Warn("broker node passed over: it did not deliver a retained message it acknowledged (a node of its cluster died?); trying another",
		"broker", redact.URL(broker), "waited", c.cfg.ProbeTimeout, "for", skipFor)
	c.reconnect(nc)
}

// options are the paho options of a connection to the fleet's broker.
func (cfg ConnConfig) options(clientID string) (*paho.ClientOptions, error) {
	o := paho.NewClientOptions()
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("broker CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("broker CA %s: no PEM certificates", cfg.CAFile)
		}
		tlsCfg.RootCAs = pool
	}
	for _, u := range cfg.URLs {
		p, err := url.Parse(u)
		if err != nil || p.Host == "" {
			return nil, fmt.Errorf("broker URL %q: want tcp://host:1883, ssl://host:8883, ws:// or wss://", u)
		}
		o.AddBroker(u)
	}
	o.SetTLSConfig(tlsCfg)
	o.SetClientID(clientID)
	o.SetUsername(cfg.Username)
	o.SetPassword(cfg.Password)
	o.SetCleanSession(true)
	o.SetAutoReconnect(true)
	o.SetConnectRetry(true)
	o.SetConnectRetryInterval(500 * time.Millisecond)
	o.SetMaxReconnectInterval(5 * time.Second)
	o.SetKeepAlive(15 * time.Second)
	o.SetPingTimeout(5 * time.Second)
	o.SetConnectTimeout(5 * time.Second)
	o.SetWriteTimeout(10 * time.Second)
	return o, nil
}

func (c *Conn) onMessage(_ paho.Client, m paho.Message) {
	c.view.put(m.Topic(), m.Payload(), m.Retained())
}

// View is the fleet as the broker holds it.
func (c *Conn) View() *View { return c.view }

// Connected reports whether the connection is up.
func (c *Conn) Connected() bool { return c.cli.IsConnectionOpen() }

// Publish publishes with QoS 1 and waits for the broker's PUBACK.
func (c *Conn) Publish(ctx context.Context, topic string, payload []byte, retain bool) error {
	c.view.sent(topic, payload)
	mark := c.view.mark()
	t := c.cli.Publish(topic, 1, retain, payload)
	select {
	case <-t.Done():
		if err := t.Error(); err != nil {
			return fmt.Errorf("publish %s: %w", topic, err)
		}
	case <-ctx.Done():
		return fmt.Errorf("publish %s: %w", topic, ctx.Err())
	}
	if retain {
		// The view takes what we retained at once (the broker's copy to
		// our subscription may come later, and a controller's next pass
		// must see the records it wrote), unless a message on the topic
		// came since the publish: our copy, or a newer one the broker
		// took after ours (another controller's lease claim), which it
		// must not overwrite (View.own).
		c.view.own(topic, payload, mark)
	}
	return nil
}

// Message is one retained publish of a batch.
type Message struct {
	Topic   string
	Payload []byte
}

// PublishAll publishes retained messages with QoS 1 without waiting for
// each PUBACK in turn (paho keeps them in flight together), and returns
// once the broker acknowledged all of them, or with the first error.
func (c *Conn) PublishAll(ctx context.Context, msgs []Message) error {
	toks := make([]paho.Token, len(msgs))
	mark := c.view.mark()
	for i, m := range msgs {
		c.view.sent(m.Topic, m.Payload)
		toks[i] = c.cli.Publish(m.Topic, 1, true, m.Payload)
	}
	for i, t := range toks {
		select {
		case <-t.Done():
			if err := t.Error(); err != nil {
				return fmt.Errorf("publish %s: %w", msgs[i].Topic, err)
			}
			c.view.own(msgs[i].Topic, msgs[i].Payload, mark)
		case <-ctx.Done():
			return fmt.Errorf("publish %s: %w", msgs[i].Topic, ctx.Err())
		}
	}
	return nil
}

// Close disconnects cleanly (no last will).
func (c *Conn) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cli.Disconnect(250)
}
