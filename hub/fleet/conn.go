package fleet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
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
}

// Conn is a connection to the fleet's broker with a [View] of the fleet's
// retained messages. Safe for concurrent use.
type Conn struct {
	cfg  ConnConfig
	cli  paho.Client
	view *View
}

// Dial connects and subscribes to the fleet's topics; it returns once the
// first connect succeeded (or fails after cfg.ConnectTimeout). It keeps
// reconnecting afterwards.
func Dial(ctx context.Context, cfg ConnConfig) (*Conn, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("fleet: no broker URL")
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	c := &Conn{cfg: cfg, view: newView(cfg.Topics)}
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
	o.SetClientID(cfg.ClientID)
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
	if cfg.WillTopic != "" {
		o.SetBinaryWill(cfg.WillTopic, cfg.WillPayload, 1, true)
	}
	synced := make(chan error, 1)
	o.SetOnConnectHandler(func(cli paho.Client) {
		go func() {
			err := c.sync(cli)
			if err == nil {
				c.view.connected(true)
				if cfg.OnConnect != nil {
					cfg.OnConnect(c)
				}
			}
			select {
			case synced <- err:
			default:
			}
		}()
	})
	o.SetConnectionLostHandler(func(paho.Client, error) { c.view.connected(false) })
	o.SetReconnectingHandler(func(paho.Client, *paho.ClientOptions) { c.view.connected(false) })
	c.cli = paho.NewClient(o)
	tok := c.cli.Connect()
	select {
	case <-tok.Done():
	case <-time.After(cfg.ConnectTimeout):
		c.cli.Disconnect(0)
		return nil, fmt.Errorf("broker %v: no connection within %s", cfg.URLs, cfg.ConnectTimeout)
	case <-ctx.Done():
		c.cli.Disconnect(0)
		return nil, ctx.Err()
	}
	if err := tok.Error(); err != nil {
		c.cli.Disconnect(0)
		return nil, fmt.Errorf("broker %v: %w", cfg.URLs, err)
	}
	select {
	case err := <-synced:
		if err != nil {
			c.cli.Disconnect(0)
			return nil, fmt.Errorf("broker %v: %w", cfg.URLs, err)
		}
	case <-ctx.Done():
		c.cli.Disconnect(0)
		return nil, ctx.Err()
	}
	return c, nil
}

// sync subscribes to the fleet's topics and waits until the broker has
// sent every retained message: it publishes a marker on a topic of its
// own and waits for it to come back, which a broker does after the
// retained messages of the subscriptions made before. Until then the view
// counts as disconnected, so no decision is made on half the fleet.
func (c *Conn) sync(cli paho.Client) error {
	filters := c.cfg.Topics.Filters()
	for _, f := range filters {
		if t := cli.Subscribe(f, 1, c.onMessage); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
			return fmt.Errorf("subscribe %s: %v", f, t.Error())
		}
	}
	marker := c.cfg.Topics.p() + "/fleet/sync/" + c.cfg.ClientID
	back := make(chan struct{}, 1)
	if t := cli.Subscribe(marker, 1, func(paho.Client, paho.Message) {
		select {
		case back <- struct{}{}:
		default:
		}
	}); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return fmt.Errorf("subscribe %s: %v", marker, t.Error())
	}
	defer cli.Unsubscribe(marker)
	cli.Publish(marker, 1, false, []byte("sync"))
	select {
	case <-back:
		return nil
	case <-time.After(15 * time.Second):
		return fmt.Errorf("the broker did not echo %s within 15s", marker)
	}
}

func (c *Conn) onMessage(_ paho.Client, m paho.Message) {
	c.view.put(m.Topic(), m.Payload())
}

// View is the fleet as the broker holds it.
func (c *Conn) View() *View { return c.view }

// Connected reports whether the connection is up.
func (c *Conn) Connected() bool { return c.cli.IsConnectionOpen() }

// Publish publishes with QoS 1 and waits for the broker's PUBACK.
func (c *Conn) Publish(ctx context.Context, topic string, payload []byte, retain bool) error {
	c.view.sent(topic, payload)
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
		// What we retained is what the broker holds now: the view sees it
		// at once (the broker does not echo it to a subscriber that
		// published it... it does, but later).
		c.view.put(topic, payload)
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
			c.view.put(msgs[i].Topic, msgs[i].Payload)
		case <-ctx.Done():
			return fmt.Errorf("publish %s: %w", msgs[i].Topic, ctx.Err())
		}
	}
	return nil
}

// Close disconnects cleanly (no last will).
func (c *Conn) Close() { c.cli.Disconnect(250) }
