package fleet

import (
	"encoding/json"
	"time"
)

// DeviceState is what a device publishes, retained, on <p>/<device>/state:
// a compact document in the shape of an IoT Hub twin, so target
// conditions read as in Azure (tags.site, properties.reported...).
type DeviceState struct {
	DeviceID   string            `json:"deviceId"`
	Tags       map[string]string `json:"tags"`
	Properties struct {
		Reported Reported `json:"reported"`
	} `json:"properties"`
	// At is when the device published it.
	At time.Time `json:"at"`
}

// Reported is the part of the agent's reported state the fleet reads.
type Reported struct {
	Ledge             string            `json:"ledge,omitempty"` // ledge's version
	Deployment        *DeployedState    `json:"deployment,omitempty"`
	RolledBackFrom    *RolledBack       `json:"rolledBackFrom,omitempty"`
	Rejected          *RejectedState    `json:"rejected,omitempty"`
	LastDesiredStatus *Status           `json:"lastDesiredStatus,omitempty"`
	Modules           map[string]string `json:"modules,omitempty"` // module -> runtime status
	Models            map[string]string `json:"models,omitempty"`  // model -> active version
	Engine            string            `json:"engine,omitempty"`  // "" when Docker answers, else why not
}

// DeployedState is the device's current deployment.
type DeployedState struct {
	Version string `json:"version"`
	Digest  string `json:"digest"`
	State   string `json:"state"` // applying, converged, failed
	Reason  string `json:"reason,omitempty"`
}

// RolledBack is a deployment the device rolled back from by itself.
type RolledBack struct {
	Version string `json:"version"`
	Reason  string `json:"reason"`
}

// RejectedState is the last manifest the device refused.
type RejectedState struct {
	Version string `json:"version,omitempty"`
	Digest  string `json:"digest"`
	Reason  string `json:"reason"`
}

// Status is Azure's lastDesiredStatus.
type Status struct {
	Code        int    `json:"code"`
	Description string `json:"description"`
}

// Presence is retained on <p>/<device>/online (and on a controller's
// topic): online at connect, the last will says offline.
type Presence struct {
	Online bool      `json:"online"`
	Since  time.Time `json:"since,omitzero"`
}

// OfflinePayload is the last will of a device or controller.
var OfflinePayload = []byte(`{"online":false}`)

// OnlinePayload is published at every connect.
func OnlinePayload() []byte {
	b, _ := json.Marshal(Presence{Online: true, Since: time.Now().UTC()})
	return b
}

// Assignment is what the controller gave a device, retained on
// <p>/fleet/assignments/<device>: the deployment, the version and digest
// of the sealed manifest, the wave, and what the device had before (for
// a rollback).
type Assignment struct {
	Deployment string `json:"deployment"`
	Generation int64  `json:"generation"`
	// ManifestDigest is the definition's manifest the device was given
	// (a new manifest under the same name is a new rollout).
	ManifestDigest string    `json:"manifestDigest"`
	Version        string    `json:"version"`
	Digest         string    `json:"digest"`
	Wave           int       `json:"wave"`
	At             time.Time `json:"at"`
	// Previous is the deployment the device had from the fleet before,
	// "" when none.
	Previous string `json:"previous,omitempty"`
	// RolledBack says this assignment undoes Deployment's rollout (the
	// device gets Previous's manifest back).
	RollbackOf string `json:"rollbackOf,omitempty"`
}

// Rollout is a deployment's progress, retained by the controller on
// <p>/fleet/rollouts/<name>: the only state a controller keeps, and it
// keeps it on the broker.
type Rollout struct {
	Name           string `json:"name"`
	Generation     int64  `json:"generation"`
	ManifestDigest string `json:"manifestDigest"`
	// Wave is the wave in progress (0-based).
	Wave int `json:"wave"`
	// WaveStarted is when the current wave was given out; Converged when
	// all its devices had converged (the soak runs from there).
	WaveStarted time.Time `json:"waveStarted,omitzero"`
	Converged   time.Time `json:"converged,omitzero"`
	// Phase: rolling, soaking, paused, completed, aborted, rolledBack,
	// or deleted: the deployment was deleted at Generation (the record
	// keeps that generation on the broker, below which a definition of
	// the name is a replay).
	Phase  string    `json:"phase"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
	// Controller is the id of the controller that wrote it.
	Controller string `json:"controller"`
}

// Rollout phases.
const (
	PhaseRolling    = "rolling"
	PhaseSoaking    = "soaking"
	PhasePaused     = "paused"
	PhaseCompleted  = "completed"
	PhaseAborted    = "aborted"
	PhaseRolledBack = "rolledBack"
	PhaseDeleted    = "deleted"
)

// Lease names the controller that may act, retained on <p>/fleet/lease.
type Lease struct {
	Holder string    `json:"holder"`
	Until  time.Time `json:"until"`
	At     time.Time `json:"at"`
}
