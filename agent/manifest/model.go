package manifest

import (
	"encoding/json"
	"fmt"
	"math"
	"net"
	"strings"
)

// Manifest is a deployment, whatever format it came in: the one internal
// model the agent reconciles. Its JSON encoding is deterministic (modules
// and credentials sorted by name, map keys sorted, sections in canonical
// JSON), so two manifests that mean the same encode the same.
type Manifest struct {
	// Version orders deployments: a newer one wins (see [CompareVersions]).
	// Empty when an Azure manifest carries none.
	Version string `json:"version"`
	// Modules are the container modules, sorted by name.
	Modules []Module `json:"modules"`
	// RegistryCredentials are used to pull images, sorted by name.
	RegistryCredentials []RegistryCredential `json:"registryCredentials,omitempty"`
	// Logging is the Docker log configuration of modules that set none in
	// their createOptions; nil means ledge's default (json-file, rotated).
	Logging *Logging `json:"logging,omitempty"`
	// Twins are desired module twin properties (a JSON object each), keyed
	// by module id; each replaces that module's whole desired section.
	Twins map[string]json.RawMessage `json:"twins,omitempty"`
	// Sections are the parts other components own, in canonical JSON,
	// keyed by section name (SectionRoutes, SectionStoreAndForward,
	// SectionPipelines, SectionModels). A section the manifest does not
	// have is absent.
	Sections map[string]json.RawMessage `json:"sections,omitempty"`

	// Format is the format the manifest was read from.
	Format Format `json:"-"`
	// Warnings are things accepted but worth telling the author: what
	// they wrote that is ignored or read differently than written.
	Warnings []string `json:"-"`
	// Notes say how ledge reads the standard parts of an Azure manifest
	// that it does not take as written (system modules, mqttBroker, a
	// deployment without a ledge version): true of every stock manifest,
	// so not warnings.
	Notes []string `json:"-"`
}

// Section names.
const (
	SectionModels          = "models"
	SectionStoreAndForward = "storeAndForward"
	SectionRoutes          = "routes"
	SectionPipelines       = "pipelines"
)

// SectionNames lists the sections in the order the agent applies them:
// models before the pipelines that use them, store-and-forward and routes
// before the modules and pipelines that send on them.
var SectionNames = []string{SectionModels, SectionStoreAndForward, SectionRoutes, SectionPipelines}

// Format names a manifest format.
type Format string

const (
	FormatYAML  Format = "yaml"  // native, YAML
	FormatJSON  Format = "json"  // native, JSON (comments and trailing commas allowed)
	FormatAzure Format = "azure" // Azure IoT Edge modulesContent
)

// Module is one container module.
type Module struct {
	Name            string            `json:"name"`
	Image           string            `json:"image"`
	Version         string            `json:"version,omitempty"` // free text
	Status          Status            `json:"status"`
	RestartPolicy   RestartPolicy     `json:"restartPolicy"`
	ImagePullPolicy PullPolicy        `json:"imagePullPolicy"`
	StartupOrder    uint32            `json:"startupOrder"`
	Env             map[string]string `json:"env,omitempty"`
	// CreateOptions is the body of Docker's ContainerCreate (Config fields,
	// HostConfig, NetworkingConfig), canonical JSON; "{}" when none.
	CreateOptions json.RawMessage `json:"createOptions"`
	// Digest is Azure's settings.digest, kept for reporting.
	Digest string `json:"digest,omitempty"`
}

// DefaultStartupOrder is the startup order of a module that sets none: last.
const DefaultStartupOrder = math.MaxUint32

// RegistryCredential logs in to one registry.
type RegistryCredential struct {
	Name     string `json:"name"`
	Address  string `json:"address"`
	Username string `json:"username"`
	Password string `json:"password"`
}

// Logging is a Docker log driver and its options.
type Logging struct {
	Type   string            `json:"type"`
	Config map[string]string `json:"config,omitempty"`
}

// Status is a module's desired status.
type Status string

const (
	StatusRunning Status = "running"
	StatusStopped Status = "stopped"
)

// RestartPolicy says when the agent restarts a module. They are ordered:
// each restarts in the cases of the one before it and more.
type RestartPolicy string

const (
	RestartNever       RestartPolicy = "never"        // never restarted
	RestartOnFailure   RestartPolicy = "on-failure"   // restarted after a non-zero exit
	RestartOnUnhealthy RestartPolicy = "on-unhealthy" // ... and when its health check fails
	RestartAlways      RestartPolicy = "always"       // ... and after a clean exit: forever
)

// Rank orders the policies: never 0 < on-failure 1 < on-unhealthy 2 < always 3.
func (p RestartPolicy) Rank() int {
	switch p {
	case RestartOnFailure:
		return 1
	case RestartOnUnhealthy:
		return 2
	case RestartAlways:
		return 3
	}
	return 0
}

// PullPolicy says when the agent pulls a module's image.
type PullPolicy string

const (
	// PullOnCreate (default) pulls when a container is created and the
	// image is missing, or its tag is "latest" or absent; a failed pull of
	// an image that is present locally is a warning, so an offline
	// appliance still starts.
	PullOnCreate PullPolicy = "on-create"
	// PullNever expects the image to be present.
	PullNever PullPolicy = "never"
	// PullAlways pulls at every container creation (a failure with the
	// image present is a warning).
	PullAlways PullPolicy = "always"
)

func oneOf[T ~string](v T, allowed ...T) bool {
	for _, a := range allowed {
		if v == a {
			return true
		}
	}
	return false
}

func list[T ~string](vs ...T) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = string(v)
	}
	if len(s) == 1 {
		return s[0]
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// Module returns the module named name, or nil.
func (m *Manifest) Module(name string) *Module {
	for i := range m.Modules {
		if m.Modules[i].Name == name {
			return &m.Modules[i]
		}
	}
	return nil
}

// Credential returns the credentials for registry address (as written in
// an image reference, e.g. "myacr.azurecr.io" or "127.0.0.1:5000"), or nil.
func (m *Manifest) Credential(address string) *RegistryCredential {
	for i := range m.RegistryCredentials {
		if normalizeRegistry(m.RegistryCredentials[i].Address) == normalizeRegistry(address) {
			return &m.RegistryCredentials[i]
		}
	}
	return nil
}

func normalizeRegistry(a string) string {
	a = strings.TrimPrefix(strings.TrimPrefix(a, "https://"), "http://")
	a = strings.TrimSuffix(a, "/")
	a = strings.ToLower(a)
	switch a {
	case "docker.io", "index.docker.io", "registry-1.docker.io":
		return "docker.io"
	}
	return a
}

// Redacted returns a copy whose registry passwords are replaced, for
// showing and reporting.
func (m *Manifest) Redacted() *Manifest {
	c := *m
	c.RegistryCredentials = make([]RegistryCredential, len(m.RegistryCredentials))
	for i, rc := range m.RegistryCredentials {
		if rc.Password != "" {
			rc.Password = "***"
		}
		c.RegistryCredentials[i] = rc
	}
	return &c
}

// String is a one-line summary.
func (m *Manifest) String() string {
	return fmt.Sprintf("deployment %q (%s, %d modules)", m.Version, m.Format, len(m.Modules))
}

// UpstreamRefs lists where the manifest says $upstream, the parent in
// nested edge: module images ("$upstream:443/repo:tag") and registry
// addresses, as "modules.<name>" and "registryCredentials.<name>".
func (m *Manifest) UpstreamRefs() []string {
	var out []string
	for _, mod := range m.Modules {
		if upstreamImageRe.MatchString(mod.Image) {
			out = append(out, "modules."+mod.Name)
		}
	}
	for _, c := range m.RegistryCredentials {
		if isUpstreamAddress(c.Address) {
			out = append(out, "registryCredentials."+c.Name)
		}
	}
	return out
}

func isUpstreamAddress(a string) bool {
	return a == UpstreamImagePrefix || strings.HasPrefix(a, UpstreamImagePrefix+":")
}

// ResolveUpstream replaces $upstream in module images and registry
// addresses with parent, as edgeAgent replaces it with the parent's
// host name: "$upstream:443/repo:1" becomes "parent:443/repo:1". When
// parent carries a port itself ("parent:5000"), it replaces the port
// written after $upstream too. An IPv6 parent is put in brackets
// ("[fd00::2]:443/repo:1"), as an image reference writes it. It returns
// the images as written, by module, for the modules it changed.
func (m *Manifest) ResolveUpstream(parent string) map[string]string {
	if ip := net.ParseIP(parent); ip != nil && ip.To4() == nil {
		parent = "[" + parent + "]"
	}
	written := map[string]string{}
	swap := func(s string) string {
		rest := strings.TrimPrefix(s, UpstreamImagePrefix)
		if _, _, err := net.SplitHostPort(parent); err == nil && strings.HasPrefix(rest, ":") {
			port := rest[1:]
			if i := strings.IndexAny(port, "/"); i >= 0 {
				rest = port[i:]
			} else {
				rest = ""
			}
		}
		return parent + rest
	}
	for i := range m.Modules {
		if mod := &m.Modules[i]; upstreamImageRe.MatchString(mod.Image) {
			written[mod.Name] = mod.Image
			mod.Image = swap(mod.Image)
		}
	}
	for i := range m.RegistryCredentials {
		if c := &m.RegistryCredentials[i]; isUpstreamAddress(c.Address) {
			c.Address = swap(c.Address)
		}
	}
	return written
}
