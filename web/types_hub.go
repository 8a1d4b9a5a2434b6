package web

import (
	"encoding/json"
	"time"
)

// The MQTT hub's JSON, as the API answers it (openapi.json: HubStats and
// the types it holds, HubIdentity, HubCreated, HubTwin).

// HubStats are the hub's counters, clients, queues and upstream state.
type HubStats struct {
	Hostname         string   `json:"hostname"`
	Ports            HubPorts `json:"ports"`
	ClientsConnected int64    `json:"clientsConnected"`
	// ConnectionsPending have not authenticated yet; ConnectionsEvicted
	// were closed to make room under hub.maxPendingConnections.
	ConnectionsPending int               `json:"connectionsPending"`
	ConnectionsEvicted uint64            `json:"connectionsEvicted"`
	Clients            []HubClient       `json:"clients"`
	MessagesReceived   uint64            `json:"messagesReceived"` // MQTT PUBLISH in
	MessagesSent       uint64            `json:"messagesSent"`     // MQTT PUBLISH out
	Routed             uint64            `json:"routed"`
	Delivered          uint64            `json:"delivered"`
	C2D                uint64            `json:"c2d"`
	Methods            uint64            `json:"methods"`
	AuthFailures       uint64            `json:"authFailures"`
	Rates              HubRates          `json:"rates"`
	Drops              map[string]uint64 `json:"drops"` // by reason
	Queues             []HubQueue        `json:"queues"`
	QueueBytes         int64             `json:"queueBytes"`
	QueueQuota         int64             `json:"queueQuotaBytes"`
	Upstream           HubUpstream       `json:"upstream"`
}

// HubPorts are the bound MQTT ports.
type HubPorts struct {
	MQTT  int `json:"mqtt"`
	MQTTS int `json:"mqtts"`
	// MQTTAddr and MQTTSAddr are the bound addresses ("" when off).
	MQTTAddr  string `json:"mqttAddr"`
	MQTTSAddr string `json:"mqttsAddr"`
}

// HubClient is one connected MQTT client.
type HubClient struct {
	ID       string `json:"id"`
	Identity string `json:"identity,omitempty"`
	Kind     string `json:"kind,omitempty"`
	Auth     string `json:"auth,omitempty"`
	Remote   string `json:"remote"`
	Listener string `json:"listener"`
}

// HubRates are messages a second over the last second.
type HubRates struct {
	MQTTIn    float64 `json:"mqttIn"`
	MQTTOut   float64 `json:"mqttOut"`
	Routed    float64 `json:"routedIn"`
	Delivered float64 `json:"delivered"`
}

// HubQueue is one endpoint's store-and-forward queue and delivery.
type HubQueue struct {
	Endpoint   string        `json:"endpoint"`
	Depth      int           `json:"depth"`    // queued, including in flight
	Inflight   int           `json:"inflight"` // handed out, not yet acked
	Bytes      int64         `json:"bytes"`
	OldestAge  time.Duration `json:"oldestAge"`  // nanoseconds
	Priorities map[int]int   `json:"priorities"` // depth per priority (waiting only)
	Delivered  uint64        `json:"delivered"`
	Failures   uint64        `json:"failures"`
	Backoff    time.Duration `json:"backoff"` // nanoseconds
	LastError  string        `json:"lastError,omitempty"`
}

// HubUpstream is the upstream bridge's state.
type HubUpstream struct {
	Mode      string    `json:"mode"`
	Broker    string    `json:"broker,omitempty"`
	State     string    `json:"state"`
	Since     time.Time `json:"since"`
	LastError string    `json:"lastError,omitempty"`
	// Relays are the connections to a parent on behalf of this device's
	// twins, modules and leaf devices (azure mode).
	Relays []HubRelay `json:"relays,omitempty"`
}

// HubRelay is one connection to the parent on behalf of an identity.
type HubRelay struct {
	Identity  string `json:"identity"`
	State     string `json:"state"` // connecting, connected, refused
	LastError string `json:"lastError,omitempty"`
}

// HubIdentity is a device, module or user identity; keys appear only
// where the identity's secrets are shown (HubCreated).
type HubIdentity struct {
	Name           string    `json:"name"` // device id, <device>/<module>, or user name
	Kind           string    `json:"kind"`
	Device         string    `json:"deviceId,omitempty"`
	Module         string    `json:"moduleId,omitempty"`
	PrimaryKey     string    `json:"primaryKey,omitempty"`
	SecondaryKey   string    `json:"secondaryKey,omitempty"`
	X509Thumbprint string    `json:"x509Thumbprint,omitempty"`
	X509CA         bool      `json:"x509CA,omitempty"`
	Enabled        bool      `json:"enabled"`
	ManagedBy      string    `json:"managedBy,omitempty"`
	Parent         string    `json:"parent,omitempty"` // the edge device that connects on its behalf
	Created        time.Time `json:"created"`
}

// HubCreated is an identity with its secrets and connection string.
type HubCreated struct {
	HubIdentity
	Password         string `json:"password,omitempty"`
	ConnectionString string `json:"connectionString,omitempty"`
}

// HubTwin is a device's or module's twin: two JSON documents and their
// versions.
type HubTwin struct {
	Desired         json.RawMessage `json:"desired"`
	DesiredVersion  int64           `json:"desiredVersion"`
	Reported        json.RawMessage `json:"reported"`
	ReportedVersion int64           `json:"reportedVersion"`
}
