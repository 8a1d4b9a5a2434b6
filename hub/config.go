package hub

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"ledge/internal/yamlstrict"
)

// Config is the hub: section of ledge.yaml. Every field has a working
// default from [DefaultConfig].
type Config struct {
	// Enabled runs the hub (default true).
	Enabled bool `yaml:"enabled"`
	// Hostname is the name modules and leaf devices connect to and put in
	// their SAS tokens (default: the machine's hostname). It is in the TLS
	// server certificate.
	Hostname string `yaml:"hostname"`
	// IoTHubHostname is another name accepted as the host in usernames and
	// SAS audiences, e.g. the IoT Hub name devices were provisioned with.
	IoTHubHostname string `yaml:"iothubHostname"`
	// Listen addresses; "" turns a listener off.
	Listen ListenConfig `yaml:"listen"`
	// TLS: the generated CA and server certificate.
	TLS TLSConfig `yaml:"tls"`
	// MaxMessageBytes bounds an inbound PUBLISH payload (default 262144,
	// IoT Hub's limit).
	MaxMessageBytes int `yaml:"maxMessageBytes"`
	// MaxClients bounds connected clients (default 1000).
	MaxClients int `yaml:"maxClients"`
	// MaxConnectionsPerIdentity bounds the connections one identity holds
	// at once, and its sessions (connected or kept while away), so one
	// user's credentials cannot fill maxClients or the memory and lock the
	// devices out (default 100; devices and modules hold one anyway: their
	// client id is their name; modules without an identity count against
	// their device).
	MaxConnectionsPerIdentity int `yaml:"maxConnectionsPerIdentity"`
	// ConnectTimeout is how long a new connection has for its TLS
	// handshake (or WebSocket upgrade) and its CONNECT (default 10s).
	ConnectTimeout time.Duration `yaml:"connectTimeout"`
	// MaxPendingConnections bounds connections that have not
	// authenticated yet; past it the oldest is closed (default 256).
	MaxPendingConnections int `yaml:"maxPendingConnections"`
	// MaxPendingWrites bounds messages queued to one slow client before
	// further QoS 0 messages to it are dropped and counted (default 1024).
	MaxPendingWrites int `yaml:"maxPendingWrites"`
	// MethodTimeout is the default direct-method timeout (default 30s).
	MethodTimeout time.Duration `yaml:"methodTimeout"`
	// ACL grants plain MQTT topics; IoT Hub topics (devices/..., $iothub/...)
	// follow the identity and are never granted here.
	ACL []ACLRule `yaml:"acl"`
	// Routes are the initial route table (the agent's manifest replaces
	// them), by name.
	Routes map[string]RouteConfig `yaml:"routes"`
	// StoreAndForward sets the queue.
	StoreAndForward StoreConfig `yaml:"storeAndForward"`
	// Upstream is the bridge to the cloud or a parent hub.
	Upstream UpstreamConfig `yaml:"upstream"`
}

// ListenConfig holds the listener addresses.
type ListenConfig struct {
	MQTT  string `yaml:"mqtt"`  // plain MQTT, default ":1883"
	MQTTS string `yaml:"mqtts"` // MQTT over TLS, default ":8883"
	// WebSocket is an extra address serving MQTT over WebSocket at
	// /$iothub/websocket and module-to-module direct methods at /twins/,
	// over TLS with the hub's certificate (":443" is where the Azure IoT
	// SDKs' WebSocket transport and ModuleClient.invokeMethod dial); the
	// web server's port serves MQTT over WebSocket in any case.
	WebSocket string `yaml:"websocket"`
	// WebSocketPlain serves the WebSocket address without TLS (behind a
	// proxy that terminates it).
	WebSocketPlain bool `yaml:"websocketPlain"`
}

// TLSConfig sets the certificates generated into <dataDir>/hub/.
type TLSConfig struct {
	// ServerValidity of a generated server certificate (default 825 days).
	ServerValidity time.Duration `yaml:"serverValidity"`
	// RenewBefore renews the server certificate this long before it
	// expires, while running (default 30 days).
	RenewBefore time.Duration `yaml:"renewBefore"`
	// ExtraNames are more DNS names or IPs for the server certificate.
	ExtraNames []string `yaml:"extraNames"`
	// ClientCAFile holds more CAs (PEM) that may sign X.509 client
	// certificates; the hub's own CA always may.
	ClientCAFile string `yaml:"clientCAFile"`
}

// ACLRule grants plain topics to identities.
type ACLRule struct {
	// Identities are names or globs ("sensor-*", "*"); empty means all.
	Identities []string `yaml:"identities"`
	// Kinds limits the rule to identity kinds: user, device, module.
	Kinds []string `yaml:"kinds"`
	// Publish and Subscribe are MQTT topic filters; {id} stands for the
	// client's identity name.
	Publish   []string `yaml:"publish"`
	Subscribe []string `yaml:"subscribe"`
}

// RouteConfig is one route: the Azure route grammar, a priority (0
// highest ... 9) and a time to live in seconds.
type RouteConfig struct {
	Route          string `yaml:"route" json:"route"`
	Priority       *int   `yaml:"priority" json:"priority,omitempty"`
	TimeToLiveSecs *int64 `yaml:"timeToLiveSecs" json:"timeToLiveSecs,omitempty"`
}

// StoreConfig sets store-and-forward.
type StoreConfig struct {
	// TimeToLive of a queued message when its route sets none (default
	// 2h; 0 or negative: never expires).
	TimeToLive time.Duration `yaml:"timeToLive" json:"timeToLive"`
	// QuotaBytes bounds the queued bytes (default 256 MiB). When full, the
	// oldest message of the lowest priority is dropped.
	QuotaBytes int64 `yaml:"quotaBytes" json:"quotaBytes"`
	// ReserveBytes is left free on the data dir's file system: new
	// messages are refused (not acknowledged) rather than fill it, so
	// deleting delivered ones, checkpoints and the rest of ledge always
	// have room (default 32 MiB, as the model store keeps).
	ReserveBytes int64 `yaml:"reserveBytes" json:"reserveBytes"`
}

// UpstreamConfig is the bridge.
type UpstreamConfig struct {
	// Mode is "" (none), "mqtt" (a generic broker) or "azure" (IoT Hub
	// device API, or a parent ledge).
	Mode string `yaml:"mode"`
	// URL of the broker: tcp://host:1883, ssl://host:8883, ws://, wss://.
	// In azure mode, default ssl://<host>:8883.
	URL string `yaml:"url"`
	// Host is the IoT Hub (or parent ledge) hostname, azure mode.
	Host string `yaml:"host"`
	// DeviceID is this appliance's identity upstream (default: deviceId).
	DeviceID string `yaml:"deviceId"`
	// DeviceKey is the base64 symmetric key, azure mode.
	DeviceKey string `yaml:"deviceKey"`
	// ClientID, Username, Password: generic mode credentials.
	ClientID string `yaml:"clientId"`
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// CAFile verifies the broker's certificate (default: system roots).
	CAFile string `yaml:"caFile"`
	// TopicTemplate, generic mode: where $upstream messages go. Fields:
	// {deviceId}, {sourceDevice}, {sourceModule}, {output}, {properties}.
	TopicTemplate string `yaml:"topicTemplate"`
	// KeepAlive of the connection (default 30s).
	KeepAlive time.Duration `yaml:"keepAlive"`
	// Relay, azure mode (default true): the parent is a full parent. The
	// agent takes deployments from this device's $edgeAgent, $edgeHub and
	// $ledge twins there and reports to $edgeAgent; the devices and
	// modules connected here get the parent's direct methods, C2D
	// messages and desired properties (parent.go).
	Relay bool `yaml:"relay"`
	// URLs are more brokers of the same cluster, tried in turn after URL
	// when the connection drops (generic mode).
	URLs []string `yaml:"urls"`

	// Presence, set by the wiring (not ledge.yaml), marks this appliance
	// online on the upstream broker while the link is up: Online is
	// published retained on Topic at every connect, Offline is the last
	// will the broker publishes there (retained) when the link dies.
	Presence *UpstreamPresence `yaml:"-" json:"-"`
}

// UpstreamPresence is a retained online marker with a last will.
type UpstreamPresence struct {
	Topic   string
	Online  func() []byte
	Offline []byte
}

// DefaultConfig is the hub when ledge.yaml says nothing.
func DefaultConfig() Config {
	return Config{
		Enabled:          true,
		Listen:           ListenConfig{MQTT: ":1883", MQTTS: ":8883"},
		TLS:              TLSConfig{ServerValidity: 825 * 24 * time.Hour, RenewBefore: 30 * 24 * time.Hour},
		MaxMessageBytes:  256 * 1024,
		MaxClients:       1000,
		MaxPendingWrites: 1024,

		MaxConnectionsPerIdentity: 100,
		ConnectTimeout:            10 * time.Second,
		MaxPendingConnections:     256,
		MethodTimeout:             30 * time.Second,
		ACL:                       []ACLRule{{Kinds: []string{"user"}, Publish: []string{"#"}, Subscribe: []string{"#"}}},
		StoreAndForward:           StoreConfig{TimeToLive: 2 * time.Hour, QuotaBytes: 256 << 20, ReserveBytes: 32 << 20},
		Upstream:                  UpstreamConfig{TopicTemplate: "ledge/{deviceId}/messages/events", KeepAlive: 30 * time.Second, Relay: true},
	}
}

// Validate checks the values, naming the field (under hub.).
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("hub.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if strings.ContainsAny(c.Hostname, "/ #+") {
		bad("hostname", "%q is not a hostname", c.Hostname)
	}
	if c.MaxMessageBytes <= 0 || c.MaxMessageBytes > 16<<20 {
		bad("maxMessageBytes", "%d: want 1 to 16777216", c.MaxMessageBytes)
	}
	if c.MaxClients <= 0 {
		bad("maxClients", "%d: want at least 1", c.MaxClients)
	}
	if c.MaxConnectionsPerIdentity <= 0 {
		bad("maxConnectionsPerIdentity", "%d: want at least 1", c.MaxConnectionsPerIdentity)
	}
	if c.ConnectTimeout < 100*time.Millisecond || c.ConnectTimeout > 5*time.Minute {
		bad("connectTimeout", "%s: want 100ms to 5m", c.ConnectTimeout)
	}
	if c.MaxPendingConnections <= 0 {
		bad("maxPendingConnections", "%d: want at least 1", c.MaxPendingConnections)
	}
	if c.MaxPendingWrites <= 0 {
		bad("maxPendingWrites", "%d: want at least 1", c.MaxPendingWrites)
	}
	if c.MethodTimeout < time.Second || c.MethodTimeout > 5*time.Minute {
		bad("methodTimeout", "%s: want 1s to 5m", c.MethodTimeout)
	}
	if c.TLS.ServerValidity < 48*time.Hour {
		bad("tls.serverValidity", "%s: want at least 48h", c.TLS.ServerValidity)
	}
	if c.TLS.RenewBefore <= 0 || c.TLS.RenewBefore >= c.TLS.ServerValidity {
		bad("tls.renewBefore", "%s: want more than 0 and less than serverValidity", c.TLS.RenewBefore)
	}
	for i, r := range c.ACL {
		for _, k := range r.Kinds {
			if k != "user" && k != "device" && k != "module" {
				bad(yamlstrict.Field(yamlstrict.Index("acl", i), "kinds"), "%q: want user, device or module", k)
			}
		}
		for j, f := range append(append([]string{}, r.Publish...), r.Subscribe...) {
			if !validFilter(f) {
				bad(yamlstrict.Index("acl", i), "filter %d %q is not an MQTT topic filter", j, f)
			}
		}
	}
	if c.StoreAndForward.ReserveBytes < 0 {
		bad("storeAndForward.reserveBytes", "%d: want 0 (none) or more", c.StoreAndForward.ReserveBytes)
	}
	if c.StoreAndForward.QuotaBytes < 0 {
		bad("storeAndForward.quotaBytes", "%d: want 0 (no bound) or more", c.StoreAndForward.QuotaBytes)
	}
	if err := c.Upstream.validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (u *UpstreamConfig) validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("hub.upstream.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	switch u.Mode {
	case "":
		return nil
	case "mqtt":
		if u.URL == "" {
			bad("url", "required in mqtt mode")
		}
		if u.TopicTemplate == "" {
			bad("topicTemplate", "required in mqtt mode")
		}
	case "azure":
		if u.Host == "" {
			bad("host", "required in azure mode")
		}
		if u.DeviceKey == "" {
			bad("deviceKey", "required in azure mode")
		}
	default:
		bad("mode", "%q: want mqtt or azure", u.Mode)
	}
	for i, raw := range append([]string{u.URL}, u.URLs...) {
		field := "url"
		if i > 0 {
			field = fmt.Sprintf("urls[%d]", i-1)
		} else if raw == "" {
			continue
		}
		p, err := url.Parse(raw)
		if err != nil || p.Host == "" {
			bad(field, "%q is not a URL like tcp://host:1883", raw)
		} else {
			switch p.Scheme {
			case "tcp", "mqtt", "ssl", "tls", "mqtts", "ws", "wss":
			default:
				bad(field, "scheme %q: want tcp, ssl, ws or wss", p.Scheme)
			}
		}
	}
	if u.KeepAlive < 0 {
		bad("keepAlive", "must not be negative")
	}
	return errors.Join(errs...)
}

// validFilter reports whether f is an MQTT topic filter.
func validFilter(f string) bool {
	if f == "" {
		return false
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return false
		}
		if strings.Contains(l, "+") && l != "+" {
			return false
		}
	}
	return true
}
