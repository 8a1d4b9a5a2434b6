package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"

	"ledge/agent/manifest"
	"ledge/agent/workload"
)

var containerNameRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// Paths inside containers.
const (
	caPathInContainer  = "/run/ledge/hub-ca.pem"
	workloadAPIVersion = "2022-08-03"
)

// containerSpec is everything ContainerCreate gets for one module.
type containerSpec struct {
	Name   string
	Config *container.Config
	Host   *container.HostConfig
	Net    *network.NetworkingConfig
	Hash   string
	// Elevated are the elevated settings the module asked for and the
	// policy allowed.
	Elevated []Elevation
	// own holds the host paths the module itself asked for (binds,
	// mounts, devices), checked again before every start: what they
	// resolve to on the host can change between two starts of the same
	// container (a link made in a folder the module may write), and
	// Docker follows links when it starts it.
	own *container.HostConfig
}

// injection is what ledge adds to every module container.
type injection struct {
	instance string
	prefix   string
	deviceID string
	network  string // Docker network modules join ("" for none)
	gateway  string // the host's address on that network
	logging  LogConfig
	identity *ModuleIdentity // nil without a hub
	endpoint *HubEndpoint
	// workloadDir is the host folder of the module's workload API
	// socket, mounted at /var/run/iotedge ("" without one).
	workloadDir string
	// logOverride is the manifest's logging, which wins over logging.
	logOverride *manifest.Logging
	// policy judges the module's own settings before ledge adds its
	// (nil: not checked, for tests of the spec alone).
	policy *Policy
}

// buildSpec turns a module into a container spec: its createOptions, its
// env, and what ledge injects (labels, identity env, hub host, network,
// log rotation). The hash covers the whole spec, so any change to what
// the container would be made of recreates it, and nothing else does.
func buildSpec(m *manifest.Module, in injection) (*containerSpec, error) {
	co, err := manifest.DecodeCreateOptions(m.CreateOptions)
	if err != nil {
		return nil, fmt.Errorf("module %s: createOptions: %w", m.Name, err)
	}
	var elevated []Elevation
	if in.policy != nil {
		if elevated, err = in.policy.check(m.Name, &co.Config, co.HostConfig, co.NetworkingConfig); err != nil {
			return nil, err
		}
	}
	cfg := co.Config
	cfg.Image = m.Image
	host := co.HostConfig
	if host == nil {
		host = &container.HostConfig{}
	}
	own := &container.HostConfig{Binds: slices.Clone(host.Binds), Mounts: slices.Clone(host.Mounts)}
	own.Devices = slices.Clone(host.Devices)
	netcfg := co.NetworkingConfig

	// Environment: createOptions Env, then the manifest's env, then what
	// ledge injects (identity must be right, so it wins).
	env := map[string]string{}
	for _, kv := range cfg.Env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	for k, v := range m.Env {
		env[k] = v
	}
	for k, v := range in.env(m.Name) {
		env[k] = v
	}
	cfg.Env = make([]string, 0, len(env))
	for _, k := range slices.Sorted(maps.Keys(env)) {
		cfg.Env = append(cfg.Env, k+"="+env[k])
	}

	labels := map[string]string{}
	for k, v := range cfg.Labels {
		labels[k] = v
	}
	labels[labelManaged] = "true"
	labels[labelInstance] = in.instance
	labels[labelModule] = m.Name
	cfg.Labels = labels

	// The agent restarts modules itself, with back-off and reporting.
	host.RestartPolicy = container.RestartPolicy{Name: container.RestartPolicyDisabled}
	if host.LogConfig.Type == "" {
		switch {
		case in.logOverride != nil:
			host.LogConfig = container.LogConfig{Type: in.logOverride.Type, Config: in.logOverride.Config}
		case in.logging.Type != "":
			host.LogConfig = container.LogConfig{Type: in.logging.Type, Config: in.logging.Config}
		}
	}
	onLedgeNet := false
	if host.NetworkMode == "" && in.network != "" {
		host.NetworkMode = container.NetworkMode(in.network)
		onLedgeNet = true
	} else if string(host.NetworkMode) == in.network && in.network != "" {
		onLedgeNet = true
	}
	if onLedgeNet {
		if netcfg == nil {
			netcfg = &network.NetworkingConfig{}
		}
		if netcfg.EndpointsConfig == nil {
			netcfg.EndpointsConfig = map[string]*network.EndpointSettings{}
		}
		ep := netcfg.EndpointsConfig[in.network]
		if ep == nil {
			ep = &network.EndpointSettings{}
			netcfg.EndpointsConfig[in.network] = ep
		}
		if !slices.Contains(ep.Aliases, m.Name) {
			ep.Aliases = append(ep.Aliases, m.Name)
		}
	}
	if ep := in.endpoint; ep != nil && ep.Hostname != "" {
		ip := "host-gateway"
		switch {
		case host.NetworkMode.IsHost():
			ip = "127.0.0.1"
		case onLedgeNet && in.gateway != "":
			ip = in.gateway
		}
		host.ExtraHosts = append(host.ExtraHosts, ep.Hostname+":"+ip)
		if in.identity != nil && ep.CAFile != "" {
			host.Binds = append(host.Binds, ep.CAFile+":"+caPathInContainer+":ro")
		}
		if in.identity != nil && in.workloadDir != "" {
			host.Binds = append(host.Binds, in.workloadDir+":"+workload.ContainerDir+":ro")
		}
	}

	s := &containerSpec{Name: in.prefix + m.Name, Config: &cfg, Host: host, Net: netcfg, Elevated: elevated, own: own}
	sum, err := json.Marshal(struct {
		Name   string
		Config *container.Config
		Host   *container.HostConfig
		Net    *network.NetworkingConfig
	}{s.Name, s.Config, s.Host, s.Net})
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", m.Name, err)
	}
	h := sha256.Sum256(sum)
	s.Hash = hex.EncodeToString(h[:16])
	cfg.Labels[labelHash] = s.Hash
	return s, nil
}

// env is what ledge injects into module's environment.
func (in injection) env(module string) map[string]string {
	env := map[string]string{
		"LEDGE_MODULE_ID": module,
		"LEDGE_DEVICE_ID": in.deviceID,
	}
	ep, id := in.endpoint, in.identity
	if ep == nil || ep.Hostname == "" {
		return env
	}
	env["LEDGE_HUB_HOST"] = ep.Hostname
	switch {
	case ep.MQTTTLSPort > 0 && ep.CAFile != "":
		env["LEDGE_MQTT_URL"] = fmt.Sprintf("mqtts://%s:%d", ep.Hostname, ep.MQTTTLSPort)
	case ep.MQTTPort > 0:
		env["LEDGE_MQTT_URL"] = fmt.Sprintf("mqtt://%s:%d", ep.Hostname, ep.MQTTPort)
	}
	if id == nil {
		return env
	}
	if id.DeviceID != "" {
		env["LEDGE_DEVICE_ID"] = id.DeviceID
	}
	moduleID := id.ModuleID
	if moduleID == "" {
		moduleID = module
	}
	env["LEDGE_MODULE_ID"] = moduleID
	env["LEDGE_MQTT_USERNAME"] = id.Username
	env["LEDGE_MQTT_PASSWORD"] = id.Password
	if ep.CAFile != "" {
		env["LEDGE_MQTT_CA_FILE"] = caPathInContainer
		env["EdgeModuleCACertificateFile"] = caPathInContainer
	}
	iothub := ep.IoTHubHostname
	if iothub == "" {
		iothub = ep.Hostname
	}
	device := env["LEDGE_DEVICE_ID"]
	env["IOTEDGE_DEVICEID"] = device
	env["IOTEDGE_MODULEID"] = moduleID
	env["IOTEDGE_IOTHUBHOSTNAME"] = iothub
	// The SDKs dial mqtts://<IOTEDGE_GATEWAYHOSTNAME>, port 8883 unless
	// it carries another.
	gateway := ep.Hostname
	if ep.MQTTTLSPort != 0 && ep.MQTTTLSPort != 8883 {
		gateway = net.JoinHostPort(ep.Hostname, strconv.Itoa(ep.MQTTTLSPort))
	}
	env["IOTEDGE_GATEWAYHOSTNAME"] = gateway
	env["IOTEDGE_AUTHSCHEME"] = "sasToken"
	env["IOTEDGE_MODULEGENERATIONID"] = id.GenerationID
	env["IOTEDGE_APIVERSION"] = workloadAPIVersion
	if in.workloadDir != "" {
		// Azure SDK modules sign their tokens through the workload API:
		// their key stays out of their environment.
		env["IOTEDGE_WORKLOADURI"] = workload.URI
	} else if id.SharedAccessKey != "" {
		env["EdgeHubConnectionString"] = fmt.Sprintf("HostName=%s;GatewayHostName=%s;DeviceId=%s;ModuleId=%s;SharedAccessKey=%s",
			iothub, ep.Hostname, device, moduleID, id.SharedAccessKey)
	}
	return env
}
