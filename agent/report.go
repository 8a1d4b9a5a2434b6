package agent

import (
	"maps"
	"slices"
	"strconv"
	"time"
)

// Reported is the agent's reported state, in the shape of Azure's
// $edgeAgent reported properties (reference §2.1) plus ledge's own
// "deployment", "sections" and "engine". It is persisted, available from
// [Agent.Reported], and published upstream.
type Reported struct {
	SchemaVersion      string                  `json:"schemaVersion"`
	Version            VersionInfo             `json:"version"`
	LastDesiredVersion string                  `json:"lastDesiredVersion"`
	LastDesiredStatus  DesiredStatus           `json:"lastDesiredStatus"`
	Runtime            RuntimeInfo             `json:"runtime"`
	SystemModules      map[string]ModuleReport `json:"systemModules"`
	Modules            map[string]ModuleReport `json:"modules"`

	Deployment *DeploymentReport        `json:"deployment,omitempty"`
	Rejected   *Rejection               `json:"rejected,omitempty"`
	Sections   map[string]SectionReport `json:"sections,omitempty"`
	Engine     EngineReport             `json:"engine"`
	Signing    *SigningReport           `json:"signing,omitempty"`
}

// VersionInfo identifies the running ledge.
type VersionInfo struct {
	Version string `json:"version"`
	Build   string `json:"build,omitempty"`
	Commit  string `json:"commit"`
}

// DesiredStatus is Azure's lastDesiredStatus: 200 applied, 400 the
// manifest could not be read, 412 schema version not supported, 417 no
// deployment yet, 500 a deployment failed (rolled back).
type DesiredStatus struct {
	Code        int    `json:"code"`
	Description string `json:"description"`
}

// RuntimeInfo describes the container engine.
type RuntimeInfo struct {
	Type     string          `json:"type"`
	Settings RuntimeSettings `json:"settings"`
	Platform PlatformInfo    `json:"platform"`
}

// RuntimeSettings never echoes registry passwords.
type RuntimeSettings struct {
	MinDockerVersion    string         `json:"minDockerVersion,omitempty"`
	RegistryCredentials map[string]any `json:"registryCredentials"`
}

// PlatformInfo is the engine's platform.
type PlatformInfo struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Version      string `json:"version"`
}

// ModuleReport is one module's reported state (reference §2.1), with
// ledge's additions after RuntimeStatus.
type ModuleReport struct {
	Version            string              `json:"version,omitempty"`
	Type               string              `json:"type"`
	Status             string              `json:"status"` // desired: running or stopped
	RestartPolicy      string              `json:"restartPolicy"`
	ImagePullPolicy    string              `json:"imagePullPolicy"`
	StartupOrder       *uint32             `json:"startupOrder,omitempty"`
	Env                map[string]EnvValue `json:"env,omitempty"`
	Settings           ModuleSettings      `json:"settings"`
	ExitCode           int                 `json:"exitCode"`
	StatusDescription  string              `json:"statusDescription"`
	LastStartTimeUtc   string              `json:"lastStartTimeUtc"`
	LastExitTimeUtc    string              `json:"lastExitTimeUtc"`
	RestartCount       int                 `json:"restartCount"`
	LastRestartTimeUtc string              `json:"lastRestartTimeUtc"`
	RuntimeStatus      string              `json:"runtimeStatus"`

	ContainerID        string        `json:"containerId,omitempty"`
	Health             string        `json:"health,omitempty"`
	NextRestartTimeUtc string        `json:"nextRestartTimeUtc,omitempty"`
	Pull               *PullProgress `json:"pull,omitempty"`
	// Elevated lists the elevated container settings the module runs
	// with (allowed by agent.allowElevatedPermissions).
	Elevated []string `json:"elevated,omitempty"`
}

// EnvValue is Azure's env value object.
type EnvValue struct {
	Value string `json:"value"`
}

// ModuleSettings mirrors the desired settings; createOptions is chunked
// like the desired side (512 characters per chunk).
type ModuleSettings struct {
	Image         string            `json:"image"`
	ImageHash     string            `json:"imageHash,omitempty"`
	CreateOptions map[string]string `json:"-"`
}

// MarshalJSON writes createOptions, createOptions01 ... next to image.
func (s ModuleSettings) MarshalJSON() ([]byte, error) {
	out := []byte(`{"image":` + strconv.Quote(s.Image))
	if s.ImageHash != "" {
		out = append(out, `,"imageHash":`+strconv.Quote(s.ImageHash)...)
	}
	for _, k := range slices.Sorted(maps.Keys(s.CreateOptions)) {
		out = append(out, ","+strconv.Quote(k)+":"+strconv.Quote(s.CreateOptions[k])...)
	}
	return append(out, '}'), nil
}

// chunkCreateOptions cuts s into Azure's twin-sized chunks.
func chunkCreateOptions(s string) map[string]string {
	const size = 512
	out := map[string]string{}
	for i := 0; i*size < len(s) && i < 100; i++ {
		name := "createOptions"
		if i > 0 {
			name += strconv.Itoa(i/10) + strconv.Itoa(i%10)
		}
		out[name] = s[i*size : min(len(s), (i+1)*size)]
	}
	if len(out) == 0 {
		out["createOptions"] = "{}"
	}
	return out
}

// DeploymentReport is the current deployment and its fate.
type DeploymentReport struct {
	ID          int64  `json:"id"`
	Version     string `json:"version"`
	Digest      string `json:"digest"`
	Source      string `json:"source"`
	Format      string `json:"format"`
	Signer      string `json:"signer,omitempty"`
	State       string `json:"state"`
	Reason      string `json:"reason,omitempty"`
	ReceivedAt  string `json:"receivedAt"`
	ConvergedAt string `json:"convergedAt,omitempty"`
	// RolledBackFrom is the deployment that failed and was rolled back
	// to this one, when that is how this one became current.
	RolledBackFrom *RollbackReport `json:"rolledBackFrom,omitempty"`
	// Unsigned says why a deployment without a signature runs although
	// trusted keys are configured: it was applied before signing was
	// turned on.
	Unsigned string `json:"unsigned,omitempty"`
}

// SigningReport says whether manifests must be signed, and where remote
// deployments come from.
type SigningReport struct {
	// Required is true when agent.trustedKeys is set: every manifest
	// needs a valid signature, and remote ones a version that only goes
	// up.
	Required bool `json:"required"`
	// Keys are the ids of the trusted keys.
	Keys []string `json:"keys,omitempty"`
	// RemoteSources are the sources configured besides the API: "mqtt"
	// (with an upstream), "http".
	RemoteSources []string `json:"remoteSources,omitempty"`
	// Warning is set when remote deployments are taken unsigned.
	Warning string `json:"warning,omitempty"`
}

// RollbackReport says which deployment was rolled back and why.
type RollbackReport struct {
	ID      int64  `json:"id"`
	Version string `json:"version"`
	Reason  string `json:"reason"`
	At      string `json:"at"`
}

// Rejection is the last manifest refused (the running deployment stayed).
type Rejection struct {
	Version string `json:"version,omitempty"`
	Digest  string `json:"digest"`
	Source  string `json:"source"`
	Reason  string `json:"reason"`
	At      string `json:"at"`
}

// EngineReport says whether Docker answers.
type EngineReport struct {
	Connected bool   `json:"connected"`
	Error     string `json:"error,omitempty"`
	// Host is the engine's address (unix:///var/run/docker.sock...).
	Host string `json:"host,omitempty"`
}

// azureTime is reference §2.1's time format: ISO-8601 UTC, no zone.
func azureTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05.0000000")
}

// Runtime statuses (reference §2.2).
const (
	StatusUnknown   = "unknown"
	StatusRunning   = "running"
	StatusStopped   = "stopped"
	StatusFailed    = "failed"
	StatusBackoff   = "backoff"
	StatusUnhealthy = "unhealthy"
)
