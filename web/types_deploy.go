package web

import (
	"encoding/json"
	"time"
)

// The agent's JSON, as the API answers it (openapi.json: DeploymentPlan,
// PlanChange, AppliedDeployment, Deployment, AgentReport and the types it
// holds). AgentReport follows Azure IoT Edge's $edgeAgent reported
// properties, with ledge's additions.

// DeploymentPlan is what a manifest would change, thing by thing.
type DeploymentPlan struct {
	Version  string   `json:"version"`
	Format   string   `json:"format"`
	Digest   string   `json:"digest"`
	Signer   string   `json:"signer,omitempty"`
	Current  string   `json:"current,omitempty"` // the current deployment's version
	Warnings []string `json:"warnings,omitempty"`
	// Notes say how ledge reads the standard parts of an Azure manifest
	// it does not take as written (system modules, mqttBroker).
	Notes   []string     `json:"notes,omitempty"`
	Changes []PlanChange `json:"changes"`
	// Elevated lists every elevated container setting the modules ask for
	// (there only when agent.allowElevatedPermissions allows them).
	Elevated []Elevation `json:"elevated,omitempty"`
	// Offline plans were made without the running ledge.
	Offline bool `json:"offline,omitempty"`
}

// PlanChange is one line of a plan.
type PlanChange struct {
	Kind   string `json:"kind"`   // module, pipeline, route, model, twin, storeAndForward
	Name   string `json:"name"`   //
	Action string `json:"action"` // create, recreate, update, remove, unchanged
	Detail string `json:"detail,omitempty"`
}

// Elevation is an elevated container setting a module asks for.
type Elevation struct {
	Module  string `json:"module"`
	Setting string `json:"setting"` // where in createOptions, e.g. HostConfig.Binds[0]
	Value   string `json:"value"`   // what it asks for, e.g. "/:/host"
	Why     string `json:"why"`     // what it gives the module
	Key     string `json:"key"`     // the ledge.yaml key that allows it
}

// AppliedDeployment is a manifest made the current deployment, with its
// plan.
type AppliedDeployment struct {
	Deployment Deployment      `json:"deployment"`
	Plan       *DeploymentPlan `json:"plan"`
}

// Deployment is one deployment in the agent's history.
type Deployment struct {
	ID          int64     `json:"id"`
	Version     string    `json:"version"`
	Digest      string    `json:"digest"`
	Source      string    `json:"source"`
	Format      string    `json:"format"`
	Signer      string    `json:"signer,omitempty"`
	ReceivedAt  time.Time `json:"receivedAt"`
	State       string    `json:"state"`
	Reason      string    `json:"reason,omitempty"`
	ConvergedAt time.Time `json:"convergedAt,omitzero"`
	Good        bool      `json:"good"`
	PrevID      int64     `json:"prevId,omitempty"`
}

// AgentReport is the agent's reported state.
type AgentReport struct {
	SchemaVersion      string                  `json:"schemaVersion"`
	Version            AgentVersion            `json:"version"`
	LastDesiredVersion string                  `json:"lastDesiredVersion"`
	LastDesiredStatus  DesiredStatus           `json:"lastDesiredStatus"`
	Runtime            AgentRuntime            `json:"runtime"`
	SystemModules      map[string]ModuleReport `json:"systemModules"`
	Modules            map[string]ModuleReport `json:"modules"`

	Deployment *DeploymentReport        `json:"deployment,omitempty"`
	Rejected   *Rejection               `json:"rejected,omitempty"`
	Sections   map[string]SectionReport `json:"sections,omitempty"`
	Engine     EngineReport             `json:"engine"`
	Signing    *SigningReport           `json:"signing,omitempty"`
}

// SigningReport says whether manifests must be signed, and where remote
// deployments come from.
type SigningReport struct {
	Required      bool     `json:"required"` // agent.trustedKeys is set
	Keys          []string `json:"keys,omitempty"`
	RemoteSources []string `json:"remoteSources,omitempty"` // mqtt, http
	Warning       string   `json:"warning,omitempty"`       // remote deployments are taken unsigned
}

// AgentVersion identifies the running ledge.
type AgentVersion struct {
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

// AgentRuntime describes the container engine.
type AgentRuntime struct {
	Type     string          `json:"type"`
	Settings RuntimeSettings `json:"settings"`
	Platform RuntimePlatform `json:"platform"`
}

// RuntimeSettings never echo registry passwords.
type RuntimeSettings struct {
	MinDockerVersion    string                     `json:"minDockerVersion,omitempty"`
	RegistryCredentials map[string]json.RawMessage `json:"registryCredentials"`
}

// RuntimePlatform is the engine's platform.
type RuntimePlatform struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Version      string `json:"version"`
}

// ModuleReport is one module's reported state.
type ModuleReport struct {
	Version         string              `json:"version,omitempty"`
	Type            string              `json:"type"`
	Status          string              `json:"status"` // desired: running or stopped
	RestartPolicy   string              `json:"restartPolicy"`
	ImagePullPolicy string              `json:"imagePullPolicy"`
	StartupOrder    *uint32             `json:"startupOrder,omitempty"`
	Env             map[string]EnvValue `json:"env,omitempty"`
	// Settings are image, imageHash and createOptions (cut in chunks of
	// 512 characters: createOptions, createOptions01, ...).
	Settings           map[string]string `json:"settings"`
	ExitCode           int               `json:"exitCode"`
	StatusDescription  string            `json:"statusDescription"`
	LastStartTimeUtc   string            `json:"lastStartTimeUtc"`
	LastExitTimeUtc    string            `json:"lastExitTimeUtc"`
	RestartCount       int               `json:"restartCount"`
	LastRestartTimeUtc string            `json:"lastRestartTimeUtc"`
	RuntimeStatus      string            `json:"runtimeStatus"`

	ContainerID        string        `json:"containerId,omitempty"`
	Health             string        `json:"health,omitempty"`
	NextRestartTimeUtc string        `json:"nextRestartTimeUtc,omitempty"`
	Pull               *PullProgress `json:"pull,omitempty"`
	// Elevated lists the elevated container settings the module runs with.
	Elevated []string `json:"elevated,omitempty"`
	// Hub is the module's connection to the hub (as <device>/<module>);
	// absent without the hub. A running module is not necessarily
	// connected (it may be reconnecting, or not use the hub at all).
	Hub *ModuleHubLink `json:"hub,omitempty"`
}

// ModuleHubLink is whether a module's hub identity has a client connected.
type ModuleHubLink struct {
	Identity  string `json:"identity"` // <device>/<module>
	Connected bool   `json:"connected"`
	// Since is when it connected, or when it went away; when it has not
	// connected since ledge started, ledge's start (Seen false).
	Since time.Time `json:"since"`
	Seen  bool      `json:"seen"`
	// Unreachable says why a module that is not connected cannot reach
	// the hub, when ledge knows (the hub listens on loopback only).
	Unreachable string `json:"unreachable,omitempty"`
}

// EnvValue is Azure's env value object.
type EnvValue struct {
	Value string `json:"value"`
}

// PullProgress is an image pull under way.
type PullProgress struct {
	Image   string  `json:"image"`
	Current int64   `json:"current"`
	Total   int64   `json:"total"`
	Percent float64 `json:"percent"`
	Status  string  `json:"status"`
}

// DeploymentReport is the current deployment and its fate.
type DeploymentReport struct {
	ID             int64           `json:"id"`
	Version        string          `json:"version"`
	Digest         string          `json:"digest"`
	Source         string          `json:"source"`
	Format         string          `json:"format"`
	Signer         string          `json:"signer,omitempty"`
	State          string          `json:"state"`
	Reason         string          `json:"reason,omitempty"`
	ReceivedAt     string          `json:"receivedAt"`
	ConvergedAt    string          `json:"convergedAt,omitempty"`
	RolledBackFrom *RollbackReport `json:"rolledBackFrom,omitempty"`
	// Unsigned says why a deployment without a signature runs although
	// trusted keys are configured.
	Unsigned string `json:"unsigned,omitempty"`
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

// SectionReport is the state of a manifest section the agent hands to
// another component (pipelines, models, routes, storeAndForward).
type SectionReport struct {
	State  string `json:"state"` // ready, pending or failed
	Detail string `json:"detail,omitempty"`
	// Items is per-item detail, as the section's owner reports it (per
	// model: its version, state and download progress).
	Items map[string]json.RawMessage `json:"items,omitempty"`
}

// EngineReport says whether Docker answers.
type EngineReport struct {
	Connected bool   `json:"connected"`
	Error     string `json:"error,omitempty"`
	Host      string `json:"host,omitempty"`
}
