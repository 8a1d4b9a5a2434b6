package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"

	"ledge/agent/manifest"
	"ledge/internal/fault"
	"ledge/internal/yamlstrict"
)

// The privilege policy. It reads the Docker types a module's createOptions
// decode to (container.Config, HostConfig, NetworkingConfig), so it holds
// whatever the decoding accepted, and it runs where a manifest is checked
// (Apply, Check, remote sources, `deploy check --offline`) and again where
// a container spec is built. What ledge itself adds to a container (the
// hub's CA, the workload socket, its network) is not a module's request
// and is not checked.
//
// Elevated by default, and refused unless agent.allowElevatedPermissions
// (Azure's allow_elevated_docker_permissions is the precedent):
// Privileged, any CapAdd, the host's (or another container's) network,
// PID, IPC, UTS, user or cgroup namespace, SecurityOpt that turns
// confinement off, device cgroup rules, VolumesFrom, replaced masked or
// read-only paths, volumes with driver options (a "local" volume can
// mount any host path), and binds or bind mounts of /, of the Docker or
// containerd socket (or a folder holding it), of ledge's data dir, or of
// any host path outside agent.allowedBindSources. A module's own data dir,
// <dataDir>/modules/<module>, may always be bound. Devices (a camera, a
// GPIO chip) and device requests (a GPU) are allowed, but not a device
// that gives the host's disk or memory (see [Policy.device]).

// Config keys named in refusals.
const (
	keyAllowElevated = "agent.allowElevatedPermissions"
	keyBindSources   = "agent.allowedBindSources"
)

// Elevation is one elevated setting a module asks for.
type Elevation struct {
	Module  string `json:"module"`
	Setting string `json:"setting"` // where in createOptions, e.g. HostConfig.Binds[0]
	Value   string `json:"value"`   // what it asks for, e.g. "/:/host"
	Why     string `json:"why"`     // what it gives the module
	Key     string `json:"key"`     // the ledge.yaml key that allows it
}

func (e Elevation) String() string {
	return fmt.Sprintf("%s %q %s (%s)", e.Setting, e.Value, e.Why, e.Key)
}

// Policy decides which elevated settings modules may have. The zero value
// refuses every elevated setting and every bind outside the data dir.
type Policy struct {
	// AllowElevated allows everything (agent.allowElevatedPermissions).
	AllowElevated bool
	// BindSources are the host folders modules may bind
	// (agent.allowedBindSources), cleaned absolute paths.
	BindSources []string
	// DataDir is ledge's data dir: modules may bind their own folder
	// <DataDir>/modules/<module>, and nothing else in it.
	DataDir string
	// Sockets are the engine sockets no module may reach (the Docker
	// socket, containerd's).
	Sockets []string
	// Resolve follows symbolic links on this machine: a bind source whose
	// real path is elevated is refused too. Off where the manifest is
	// checked away from the appliance.
	Resolve bool
}

// NewPolicy builds the policy of an agent config; dataDir is ledge's data
// dir.
func NewPolicy(cfg Config, dataDir string) *Policy {
	p := &Policy{AllowElevated: cfg.AllowElevatedPermissions}
	for _, s := range cfg.AllowedBindSources {
		p.BindSources = append(p.BindSources, filepath.Clean(s))
	}
	if dataDir != "" {
		if abs, err := filepath.Abs(dataDir); err == nil {
			p.DataDir = abs
		}
	}
	p.Sockets = []string{"/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock", "/var/run/containerd/containerd.sock"}
	for _, h := range []string{cfg.DockerHost, os.Getenv("DOCKER_HOST")} {
		if u, err := url.Parse(h); err == nil && u.Scheme == "unix" && u.Path != "" {
			p.Sockets = append(p.Sockets, filepath.Clean(u.Path))
		}
	}
	return p
}

// ModuleDataDir is the folder a module may always bind.
func ModuleDataDir(dataDir, module string) string {
	return filepath.Join(dataDir, "modules", module)
}

// Elevations lists the elevated settings of one module's container, in
// createOptions order. It does not look at the policy's AllowElevated.
func (p *Policy) Elevations(module string, cfg *container.Config, host *container.HostConfig, nc *network.NetworkingConfig) []Elevation {
	var out []Elevation
	add := func(setting, value, why, key string) {
		out = append(out, Elevation{Module: module, Setting: setting, Value: value, Why: why, Key: key})
	}
	elevated := func(setting, value, why string) { add(setting, value, why, keyAllowElevated) }
	if host != nil {
		if host.Privileged {
			elevated("HostConfig.Privileged", "true", "gives every capability and every device of the host")
		}
		if len(host.CapAdd) > 0 {
			elevated("HostConfig.CapAdd", strings.Join(host.CapAdd, ","), "adds kernel capabilities")
		}
		namespace := func(setting, mode, what string, container bool) {
			m := strings.ToLower(strings.TrimSpace(mode))
			switch {
			case m == "host":
				elevated(setting, mode, "shares the host's "+what)
			case container && strings.HasPrefix(m, "container:"):
				elevated(setting, mode, "joins another container's "+what+" (which may be the host's)")
			}
		}
		namespace("HostConfig.NetworkMode", string(host.NetworkMode), "network", true)
		namespace("HostConfig.PidMode", string(host.PidMode), "processes", true)
		namespace("HostConfig.IpcMode", string(host.IpcMode), "IPC namespace", true)
		namespace("HostConfig.UTSMode", string(host.UTSMode), "hostname", false)
		namespace("HostConfig.UsernsMode", string(host.UsernsMode), "user namespace (no remapping)", false)
		namespace("HostConfig.CgroupnsMode", string(host.CgroupnsMode), "cgroup namespace", false)
		for i, o := range host.SecurityOpt {
			if why := unconfining(o); why != "" {
				elevated(yamlstrict.Index(yamlstrict.Field("HostConfig", "SecurityOpt"), i), o, why)
			}
		}
		if len(host.DeviceCgroupRules) > 0 {
			elevated("HostConfig.DeviceCgroupRules", strings.Join(host.DeviceCgroupRules, ","), "lets it make and use device nodes (a disk)")
		}
		if len(host.VolumesFrom) > 0 {
			elevated("HostConfig.VolumesFrom", strings.Join(host.VolumesFrom, ","), "takes the mounts of another container")
		}
		if host.MaskedPaths != nil {
			elevated("HostConfig.MaskedPaths", strings.Join(host.MaskedPaths, ","), "replaces the paths Docker hides from containers")
		}
		if host.ReadonlyPaths != nil {
			elevated("HostConfig.ReadonlyPaths", strings.Join(host.ReadonlyPaths, ","), "replaces the paths Docker makes read-only")
		}
		for i, d := range host.Devices {
			if why := p.device(d.PathOnHost); why != "" {
				elevated(yamlstrict.Index(yamlstrict.Field("HostConfig", "Devices"), i), d.PathOnHost+":"+d.PathInContainer, why)
			}
		}
		for i, b := range host.Binds {
			src, _, _ := strings.Cut(b, ":")
			if !strings.HasPrefix(src, "/") {
				continue // a named volume
			}
			if why, key := p.bindSource(module, src); why != "" {
				add(yamlstrict.Index(yamlstrict.Field("HostConfig", "Binds"), i), b, why, key)
			}
		}
		for i, m := range host.Mounts {
			setting := yamlstrict.Index(yamlstrict.Field("HostConfig", "Mounts"), i)
			switch m.Type {
			case mount.TypeBind:
				if why, key := p.bindSource(module, m.Source); why != "" {
					add(setting, m.Source+":"+m.Target, why, key)
				}
			case mount.TypeVolume:
				if vo := m.VolumeOptions; vo != nil && vo.DriverConfig != nil && len(vo.DriverConfig.Options) > 0 {
					elevated(setting, m.Source+":"+m.Target, "makes a volume with driver options (they can mount any host path or device)")
				}
			}
		}
	}
	if nc != nil {
		for _, name := range slices.Sorted(maps.Keys(nc.EndpointsConfig)) {
			if strings.EqualFold(name, "host") {
				elevated("NetworkingConfig.EndpointsConfig", name, "shares the host's network")
			}
		}
	}
	return out
}

// unconfining says what a SecurityOpt entry turns off, or "".
func unconfining(opt string) string {
	k, v, ok := strings.Cut(opt, "=")
	if !ok {
		k, v, _ = strings.Cut(opt, ":") // the old "label:disable" form
	}
	k, v = strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v)
	switch k {
	case "seccomp":
		switch strings.ToLower(v) {
		case "unconfined":
			return "turns seccomp off"
		case "builtin", "default":
			return ""
		}
		return "replaces Docker's seccomp profile"
	case "apparmor":
		if strings.EqualFold(v, "unconfined") {
			return "turns AppArmor off"
		}
	case "label":
		lv := strings.ToLower(v)
		if lv == "disable" || strings.HasSuffix(lv, "spc_t") || strings.HasSuffix(lv, "unconfined_t") {
			return "turns SELinux confinement off"
		}
	case "systempaths":
		if strings.EqualFold(v, "unconfined") {
			return "unmasks /proc and /sys paths"
		}
	case "writable-cgroups":
		if strings.EqualFold(v, "true") {
			return "makes the cgroup filesystem writable"
		}
	}
	return ""
}

// bindSource says why a host path may not be bound and which key allows
// it, or "" when it may. With Resolve, the path's real location on this
// machine (symbolic links followed) must pass too.
func (p *Policy) bindSource(module, src string) (why, key string) {
	clean := filepath.Clean(src)
	why, key = p.bindPath(module, clean)
	if why != "" || !p.Resolve {
		return why, key
	}
	if real := realPath(clean); real != clean {
		if w, k := p.bindPath(module, real); w != "" {
			return fmt.Sprintf("is a link to %s, which %s", real, strings.TrimPrefix(w, "binds ")), k
		}
	}
	return "", ""
}

func (p *Policy) bindPath(module, path string) (why, key string) {
	if path == "/" {
		return "binds the host's whole filesystem", keyAllowElevated
	}
	for _, s := range p.Sockets {
		if within(s, path) {
			return "binds the container engine's socket " + s + " (root on the host)", keyAllowElevated
		}
	}
	if p.DataDir != "" {
		own := ModuleDataDir(p.DataDir, module)
		if within(path, own) {
			return "", ""
		}
		if within(path, p.DataDir) || within(p.DataDir, path) {
			return "binds ledge's data dir (its keys and database); a module may bind only " + own, keyAllowElevated
		}
	}
	for _, root := range p.BindSources {
		if within(path, root) {
			return "", ""
		}
	}
	return "binds " + path + ", outside " + keyBindSources, keyBindSources + " or " + keyAllowElevated
}

// within reports whether path is root or below it (both clean).
func within(path, root string) bool {
	if root == "/" {
		return true
	}
	return path == root || strings.HasPrefix(path, root+"/")
}

// realPath follows symbolic links in path as far as it exists; the part
// that does not exist yet (Docker makes it) is kept as written.
func realPath(path string) string {
	rest := ""
	for dir := path; ; dir = filepath.Dir(dir) {
		if real, err := filepath.EvalSymlinks(dir); err == nil {
			return filepath.Join(real, rest)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return path
		}
		if dir == "/" {
			return path
		}
		rest = filepath.Join(filepath.Base(dir), rest)
	}
}

// privilegeError is a module's createOptions asking for what the policy
// refuses.
type privilegeError struct {
	elevations []Elevation
}

func (e *privilegeError) Error() string {
	var b strings.Builder
	b.WriteString("elevated container settings are refused (" + keyAllowElevated + " is off):")
	binds := false
	for _, el := range e.elevations {
		fmt.Fprintf(&b, "\n  module %q: %s %q %s", el.Module, el.Setting, el.Value, el.Why)
		binds = binds || el.Key != keyAllowElevated
	}
	b.WriteString("\nset " + keyAllowElevated + ": true in ledge.yaml to allow them")
	if binds {
		b.WriteString(", or list the host folders modules may bind in " + keyBindSources)
	}
	return b.String()
}

// check returns the elevated settings of one module, and an error of kind
// Forbidden when the policy refuses them.
func (p *Policy) check(module string, cfg *container.Config, host *container.HostConfig, nc *network.NetworkingConfig) ([]Elevation, error) {
	els := p.Elevations(module, cfg, host, nc)
	if len(els) == 0 || p.AllowElevated {
		return els, nil
	}
	return els, forbidden(els)
}

func forbidden(els []Elevation) error {
	pe := &privilegeError{elevations: els}
	return &fault.Error{Kind: fault.Forbidden, Msg: pe.Error(), Err: pe}
}

// checkManifest runs the policy over every module of a manifest: it
// returns their elevated settings, and one Forbidden error listing them
// all when the policy refuses them.
func (p *Policy) checkManifest(man *manifest.Manifest) ([]Elevation, error) {
	var all []Elevation
	for i := range man.Modules {
		m := &man.Modules[i]
		co, err := manifest.DecodeCreateOptions(m.CreateOptions)
		if err != nil {
			return nil, fault.New(fault.Invalid, "module %s: createOptions: %v", m.Name, err)
		}
		all = append(all, p.Elevations(m.Name, &co.Config, co.HostConfig, co.NetworkingConfig)...)
	}
	if len(all) > 0 && !p.AllowElevated {
		return all, forbidden(all)
	}
	return all, nil
}
