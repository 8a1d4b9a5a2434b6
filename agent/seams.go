package agent

import (
	"context"
	"encoding/json"
)

// The interfaces below are how the rest of ledge plugs into the agent.
// appliance wires the implementations in through [Options]; each may be
// nil, and the agent then does without it (see doc.go for what changes).

// Section is the owner of one manifest section ("models", "pipelines",
// "routes", "storeAndForward"), registered in Options.Sections under that
// name. The agent hands it the section as canonical JSON (whatever format
// the manifest was written in), or nil when the deployment has none, which
// means "none of this from the deployment": remove what earlier
// deployments created.
//
// The agent calls Validate on every section of a manifest before it
// changes anything, and rejects the whole manifest if one fails; Plan for
// `ledge deploy check`; Apply when a deployment becomes current (also at
// boot, for the persisted deployment), in the order of
// manifest.SectionNames. Apply must be idempotent, must not block on long
// work (downloads: start them and report progress through
// [SectionReporter]), and on error must leave what ran before running.
// Errors of kind fault.Invalid name what is wrong (a route's name and the
// position of a syntax error); the agent prefixes the section name.
// Methods may be called from several goroutines, never concurrently for
// Apply.
type Section interface {
	Validate(ctx context.Context, raw json.RawMessage) error
	Plan(ctx context.Context, raw json.RawMessage) ([]Change, error)
	Apply(ctx context.Context, raw json.RawMessage) error
}

// SectionReporter is implemented by a Section whose Apply finishes in the
// background (models downloading). A deployment converges only when every
// reporter says SectionReady; SectionFailed fails it (and rolls it back).
type SectionReporter interface {
	Report() SectionReport
}

// SectionReport is a section's state, shown in the reported state under
// "sections".
type SectionReport struct {
	State  string `json:"state"` // SectionReady, SectionPending or SectionFailed
	Detail string `json:"detail,omitempty"`
	// Items is per-item detail (per model: downloading 42%, ready...).
	Items map[string]any `json:"items,omitempty"`
	// Progress counts work done so far (bytes downloaded, say): while it
	// changes, a pending section counts as progress and the deployment is
	// not rolled back for want of it, however long a download takes.
	Progress int64 `json:"-"`
}

// Section states.
const (
	SectionReady   = "ready"
	SectionPending = "pending"
	SectionFailed  = "failed"
)

// Change is one line of a deployment plan.
type Change struct {
	Kind   string `json:"kind"` // module, pipeline, route, model, twin, storeAndForward
	Name   string `json:"name"`
	Action Action `json:"action"`
	Detail string `json:"detail,omitempty"`
}

// Action is what a deployment does to one thing.
type Action string

const (
	ActionCreate    Action = "create"
	ActionRecreate  Action = "recreate"  // stopped, removed, created again
	ActionUpdate    Action = "update"    // changed in place (policy, status, twin)
	ActionRemove    Action = "remove"    // stopped and removed
	ActionUnchanged Action = "unchanged" // left as it is
)

// Identities gives container modules their hub identities (implemented by
// the hub). The agent asks for a module's identity before creating its
// container and injects it as environment variables; it removes the
// identity when the module leaves the deployment.
type Identities interface {
	// ModuleIdentity returns the identity of module on this device,
	// creating it if needed. It must return the same credentials until
	// they are rotated: the agent recreates the container when they
	// change.
	ModuleIdentity(ctx context.Context, module string) (ModuleIdentity, error)
	// RemoveModuleIdentity deletes it; a missing identity is not an error.
	RemoveModuleIdentity(ctx context.Context, module string) error
	// Endpoint says how containers reach the hub.
	Endpoint() HubEndpoint
}

// ModuleIdentity is what a module needs to connect to the hub.
type ModuleIdentity struct {
	DeviceID     string
	ModuleID     string
	GenerationID string
	// Username and Password log plain MQTT clients in.
	Username string
	Password string
	// SharedAccessKey (base64) goes into the Azure connection string
	// EdgeHubConnectionString.
	SharedAccessKey string
}

// HubEndpoint is where the hub listens, as containers see it.
type HubEndpoint struct {
	// Hostname is the name modules connect to. The agent makes it resolve
	// to the host inside containers; the hub's TLS certificate must name
	// it.
	Hostname string
	// IoTHubHostname is the IoT Hub host name SAS tokens are scoped to
	// (IOTEDGE_IOTHUBHOSTNAME; default Hostname).
	IoTHubHostname string
	// MQTTPort and MQTTTLSPort are the plain and TLS MQTT ports (0: off).
	MQTTPort    int
	MQTTTLSPort int
	// CAFile is the host path of the hub's CA certificate (PEM); it is
	// mounted read-only into containers.
	CAFile string
}

// Twins receives the desired module twins of a deployment (implemented by
// the hub).
type Twins interface {
	// SetDesired replaces the desired properties of module's twin with
	// desired (a JSON object); the hub bumps $version and notifies the
	// module. Twins of modules a deployment does not list are left alone.
	SetDesired(ctx context.Context, module string, desired json.RawMessage) error
}

// Upstream is the link to the cloud broker (implemented by the hub's
// upstream bridge).
type Upstream interface {
	// Subscribe registers handler for topic. The implementation keeps the
	// subscription across reconnects and delivers the retained message on
	// each (re)subscription. handler must return quickly; the payload is
	// only valid during the call. Subscribe fails only for a bad topic;
	// cancel removes the subscription.
	Subscribe(topic string, handler func(payload []byte)) (cancel func(), err error)
	// Publish sends payload upstream (QoS 1), retained when retain is set.
	// It may fail while the upstream is unreachable; the agent publishes
	// its reported state again on the next change or tick.
	Publish(ctx context.Context, topic string, payload []byte, retain bool) error
}
