package manifest

import (
	"encoding/json"
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
)

// Schema versions ledge reads in Azure manifests (reference §1.2, §1.3).
var (
	AgentSchemaVersions = []string{"1.0", "1.1"}
	HubSchemaVersions   = []string{"1.0", "1.1", "1.2", "1.3"}
)

// LedgeTwin is the id of ledge's own module twin in an Azure manifest: its
// desired properties carry what $edgeAgent has no place for (version,
// models, pipelines).
const LedgeTwin = "$ledge"

const desiredKey = "properties.desired"

type azAgent struct {
	SchemaVersion string             `yaml:"schemaVersion"`
	Runtime       *azRuntime         `yaml:"runtime"`
	SystemModules map[string]rawNode `yaml:"systemModules"`
	Modules       map[string]rawNode `yaml:"modules"`
}

type azRuntime struct {
	Type     string             `yaml:"type"`
	Settings *azRuntimeSettings `yaml:"settings"`
}

type azRuntimeSettings struct {
	MinDockerVersion    string                      `yaml:"minDockerVersion"`
	LoggingOptions      string                      `yaml:"loggingOptions"`
	RegistryCredentials map[string]nativeCredential `yaml:"registryCredentials"`
}

type azModule struct {
	Version         string             `yaml:"version"`
	Type            string             `yaml:"type"`
	Status          string             `yaml:"status"`
	RestartPolicy   string             `yaml:"restartPolicy"`
	ImagePullPolicy string             `yaml:"imagePullPolicy"`
	StartupOrder    *int64             `yaml:"startupOrder"`
	Settings        rawNode            `yaml:"settings"`
	Env             map[string]rawNode `yaml:"env"`
}

type azEnv struct {
	Value rawNode `yaml:"value"`
}

type azHub struct {
	SchemaVersion                string          `yaml:"schemaVersion"`
	Routes                       rawNode         `yaml:"routes"`
	StoreAndForwardConfiguration *azStoreForward `yaml:"storeAndForwardConfiguration"`
	MqttBroker                   rawNode         `yaml:"mqttBroker"`
	Integrity                    rawNode         `yaml:"integrity"`
}

type azStoreForward struct {
	TimeToLiveSecs *int64 `yaml:"timeToLiveSecs"`
	StoreLimits    *struct {
		MaxSizeBytes *int64 `yaml:"maxSizeBytes"`
	} `yaml:"storeLimits"`
}

type azLedge struct {
	Version   string  `yaml:"version"`
	Models    rawNode `yaml:"models"`
	Pipelines rawNode `yaml:"pipelines"`
}

// Known keys per object, for Azure's case-insensitive JSON reading.
var (
	keysAgent     = []string{"schemaVersion", "runtime", "systemModules", "modules"}
	keysRuntime   = []string{"type", "settings"}
	keysRTSet     = []string{"minDockerVersion", "loggingOptions", "registryCredentials"}
	keysCred      = []string{"username", "password", "address"}
	keysModule    = []string{"version", "type", "status", "restartPolicy", "imagePullPolicy", "startupOrder", "settings", "env"}
	keysEnv       = []string{"value"}
	keysHub       = []string{"schemaVersion", "routes", "storeAndForwardConfiguration", "mqttBroker", "integrity"}
	keysRoute     = []string{"route", "priority", "timeToLiveSecs"}
	keysSAF       = []string{"timeToLiveSecs", "storeLimits"}
	keysLimits    = []string{"maxSizeBytes"}
	keysLedge     = []string{"version", "models", "pipelines"}
	keysTwinEntry = []string{desiredKey}
)

// foldKeys renames the keys of mapping n that match a known key but for
// case to that key, as Newtonsoft's reader matches them; two keys that
// fold to the same name are an error.
func foldKeys(src *source, n *yaml.Node, known []string, path []string, ps *problems) bool {
	if n == nil || n.Kind != yaml.MappingNode {
		return true
	}
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		for _, want := range known {
			if k.Value != want && strings.EqualFold(k.Value, want) {
				k.Value = want
			}
		}
		if first, dup := seen[strings.ToLower(k.Value)]; dup {
			ps.add(src.nodeError(k, with(path, k.Value), fmt.Sprintf("%q given twice (also at line %d; keys are case-insensitive in Azure manifests)", k.Value, first.Line)))
			return false
		}
		seen[strings.ToLower(k.Value)] = k
	}
	return true
}

// desired returns the "properties.desired" object of a modulesContent
// entry, refusing layered paths.
func desired(src *source, entry *yaml.Node, path []string, ps *problems) *yaml.Node {
	if entry.Kind != yaml.MappingNode {
		ps.at(path, "want an object {%q: {...}}", desiredKey)
		return nil
	}
	if !foldKeys(src, entry, keysTwinEntry, path, ps) {
		return nil
	}
	var d *yaml.Node
	for i := 0; i+1 < len(entry.Content); i += 2 {
		k := entry.Content[i].Value
		switch {
		case k == desiredKey:
			d = entry.Content[i+1]
		case strings.HasPrefix(strings.ToLower(k), desiredKey+"."):
			ps.at(with(path, k), "layered deployment paths (%q) are not supported: send the full deployment", k)
			return nil
		default:
			ps.at(with(path, k), "unknown key %q: want %q", k, desiredKey)
			return nil
		}
	}
	if d == nil {
		ps.at(path, "%q is missing", desiredKey)
		return nil
	}
	if d.Kind != yaml.MappingNode {
		ps.at(with(path, desiredKey), "desired properties must be an object")
		return nil
	}
	return d
}

// parseAzure maps a modulesContent object onto the internal model.
func parseAzure(src *source, mc *yaml.Node, base []string, ps *problems) *Manifest {
	m := &Manifest{Format: FormatAzure}
	if mc.Kind != yaml.MappingNode {
		ps.at(base, "modulesContent must be an object")
		return m
	}
	var agent, hub, ledge *yaml.Node
	var agentPath, hubPath, ledgePath []string
	type twin struct {
		id   string
		node *yaml.Node
		path []string
	}
	var twins []twin
	for i := 0; i+1 < len(mc.Content); i += 2 {
		id, entry := mc.Content[i].Value, mc.Content[i+1]
		path := with(base, id)
		switch {
		case strings.EqualFold(id, "$edgeAgent"):
			agentPath = with(path, desiredKey)
			agent = desired(src, entry, path, ps)
		case strings.EqualFold(id, "$edgeHub"):
			hubPath = with(path, desiredKey)
			hub = desired(src, entry, path, ps)
		case id == LedgeTwin:
			ledgePath = with(path, desiredKey)
			ledge = desired(src, entry, path, ps)
		case strings.HasPrefix(id, "$"):
			ps.at(path, "unknown system twin %q: ledge reads $edgeAgent, $edgeHub and $ledge", id)
		default:
			if d := desired(src, entry, path, ps); d != nil {
				twins = append(twins, twin{id, d, with(path, desiredKey)})
			}
		}
	}
	if agent == nil {
		if len(ps.list) == 0 {
			ps.at(base, "$edgeAgent is missing: an Azure manifest needs modulesContent.$edgeAgent.%q", desiredKey)
		}
		return m
	}
	parseAzureAgent(src, m, agent, agentPath, ps)
	if hub != nil {
		parseAzureHub(src, m, hub, hubPath, ps)
	}
	if ledge != nil {
		var l azLedge
		if foldKeys(src, ledge, keysLedge, ledgePath, ps) && decodeStrict(src, ledge, &l, ledgePath, ps) {
			m.Version = l.Version
			if err := checkVersion(m.Version); err != "" {
				ps.at(with(ledgePath, "version"), "%s", err)
			}
			setSection(m, SectionModels, l.Models, with(ledgePath, "models"), ps)
			setSection(m, SectionPipelines, l.Pipelines, with(ledgePath, "pipelines"), ps)
		}
	}
	if m.Version == "" {
		m.Warnings = append(m.Warnings, "no deployment version ($ledge desired property \"version\"): remote sources apply it whenever its content changes")
	}
	for _, t := range twins {
		setTwin(m, t.id, t.node, t.path, ps)
	}
	return m
}

func parseAzureAgent(src *source, m *Manifest, n *yaml.Node, path []string, ps *problems) {
	if !foldKeys(src, n, keysAgent, path, ps) {
		return
	}
	// The schema version first: a newer schema is refused by name, before
	// any of its fields is judged.
	if sv := child(n, "schemaVersion"); sv == nil {
		ps.at(with(path, "schemaVersion"), "schemaVersion is required (ledge reads %s)", list(AgentSchemaVersions...))
		return
	} else if !schemaOK(sv.Value, AgentSchemaVersions) {
		ps.at(with(path, "schemaVersion"), "$edgeAgent schema version %q is not supported: ledge reads %s", sv.Value, list(AgentSchemaVersions...))
		return
	}
	for _, k := range []struct {
		sub  []string
		keys []string
	}{{[]string{"runtime"}, keysRuntime}, {[]string{"runtime", "settings"}, keysRTSet}} {
		node := n
		for _, s := range k.sub {
			if node = child(node, s); node == nil {
				break
			}
		}
		if node != nil && !foldKeys(src, node, k.keys, with(path, k.sub...), ps) {
			return
		}
	}
	if rc := child(n, "runtime"); rc != nil {
		if s := child(rc, "settings"); s != nil {
			if creds := child(s, "registryCredentials"); creds != nil && creds.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(creds.Content); i += 2 {
					foldKeys(src, creds.Content[i+1], keysCred, with(path, "runtime", "settings", "registryCredentials", creds.Content[i].Value), ps)
				}
			}
		}
	}
	var a azAgent
	if !decodeStrict(src, n, &a, path, ps) {
		return
	}
	if a.Runtime != nil {
		if a.Runtime.Type != "" && a.Runtime.Type != "docker" {
			ps.at(with(path, "runtime", "type"), "runtime type %q is not supported: want docker", a.Runtime.Type)
		}
		if s := a.Runtime.Settings; s != nil {
			for _, name := range sortedKeys(s.RegistryCredentials) {
				c := s.RegistryCredentials[name]
				rc := RegistryCredential{Name: name, Address: c.Address, Username: c.Username, Password: c.Password}
				checkCredential(rc, with(path, "runtime", "settings", "registryCredentials", name), ps)
				m.RegistryCredentials = append(m.RegistryCredentials, rc)
			}
			if s.LoggingOptions != "" {
				var l Logging
				if err := json.Unmarshal([]byte(s.LoggingOptions), &l); err != nil || l.Type == "" {
					ps.at(with(path, "runtime", "settings", "loggingOptions"), `loggingOptions must be stringified JSON {"Type": "<driver>", "Config": {...}} (%v)`, err)
				} else {
					m.Logging = &l
				}
			}
		}
	}
	if len(a.SystemModules) > 0 {
		m.Warnings = append(m.Warnings, "systemModules (edgeAgent, edgeHub) are not run: ledge itself is the agent and the hub")
	}
	for _, name := range sortedKeys(a.SystemModules) {
		if sm := a.SystemModules[name]; !sm.isNull() && sm.n.Kind != yaml.MappingNode {
			ps.at(with(path, "systemModules", name), "a system module must be an object")
		}
	}
	for _, name := range sortedKeys(a.Modules) {
		mp := with(path, "modules", name)
		raw := a.Modules[name]
		if raw.isNull() || raw.n.Kind != yaml.MappingNode {
			ps.at(mp, "a module must be an object")
			continue
		}
		if mod, ok := parseAzureModule(src, name, raw.n, mp, ps); ok {
			m.Modules = append(m.Modules, mod)
		}
	}
	checkModuleNames(m.Modules, with(path, "modules"), ps)
}

func parseAzureModule(src *source, name string, n *yaml.Node, path []string, ps *problems) (Module, bool) {
	if !foldKeys(src, n, keysModule, path, ps) {
		return Module{}, false
	}
	if s := child(n, "settings"); s != nil && s.Kind == yaml.MappingNode {
		// image and digest fold; createOptions chunks are matched apart.
		if !foldKeys(src, s, []string{"image", "digest"}, with(path, "settings"), ps) {
			return Module{}, false
		}
	}
	if env := child(n, "env"); env != nil && env.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(env.Content); i += 2 {
			foldKeys(src, env.Content[i+1], keysEnv, with(path, "env", env.Content[i].Value), ps)
		}
	}
	var am azModule
	if !decodeStrict(src, n, &am, path, ps) {
		return Module{}, false
	}
	if am.Type != "" && am.Type != "docker" {
		ps.at(with(path, "type"), "module type %q is not supported: want docker", am.Type)
	}
	in := moduleInput{
		name: name, path: path, version: am.Version, status: am.Status, restartPolicy: am.RestartPolicy,
		pullPolicy: am.ImagePullPolicy, startupOrder: am.StartupOrder, envPath: with(path, "env"),
	}
	sp := with(path, "settings")
	if am.Settings.isNull() || am.Settings.n.Kind != yaml.MappingNode {
		ps.at(sp, "settings {image, createOptions} are required")
		return Module{}, false
	}
	s := am.Settings.n
	for i := 0; i+1 < len(s.Content); i += 2 {
		k, v := s.Content[i].Value, s.Content[i+1]
		switch {
		case k == "image" || k == "digest":
			if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!str" {
				ps.at(with(sp, k), "%s must be a string", k)
				continue
			}
			if k == "image" {
				in.image = v.Value
			} else {
				in.digest = v.Value
			}
		case createOptionsChunk.MatchString(k):
		default:
			ps.at(with(sp, k), "unknown key %q in settings: want image, createOptions (createOptions01 ... for chunks) or digest", k)
		}
	}
	text, coPath := joinChunks(s, sp, ps)
	in.createOptions, in.coPath = text, coPath
	if len(am.Env) > 0 {
		in.env = map[string]string{}
		for _, k := range sortedKeys(am.Env) {
			ep := with(path, "env", k)
			raw := am.Env[k]
			var e azEnv
			if raw.isNull() || !decodeStrict(src, raw.n, &e, ep, ps) {
				if raw.isNull() {
					ps.at(ep, `an env entry is {"value": ...}`)
				}
				continue
			}
			if e.Value.isNull() || e.Value.n.Kind != yaml.ScalarNode {
				ps.at(with(ep, "value"), "an env value must be a string, number or boolean")
				continue
			}
			in.env[k] = e.Value.n.Value
		}
	}
	return in.build(ps), true
}

func parseAzureHub(src *source, m *Manifest, n *yaml.Node, path []string, ps *problems) {
	if !foldKeys(src, n, keysHub, path, ps) {
		return
	}
	sv := child(n, "schemaVersion")
	if sv == nil {
		ps.at(with(path, "schemaVersion"), "schemaVersion is required (ledge reads %s)", list(HubSchemaVersions...))
		return
	}
	if !schemaOK(sv.Value, HubSchemaVersions) {
		ps.at(with(path, "schemaVersion"), "$edgeHub schema version %q is not supported: ledge reads %s", sv.Value, list(HubSchemaVersions...))
		return
	}
	if routes := child(n, "routes"); routes != nil && routes.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(routes.Content); i += 2 {
			foldKeys(src, routes.Content[i+1], keysRoute, with(path, "routes", routes.Content[i].Value), ps)
		}
	}
	if saf := child(n, "storeAndForwardConfiguration"); saf != nil {
		foldKeys(src, saf, keysSAF, with(path, "storeAndForwardConfiguration"), ps)
		foldKeys(src, child(saf, "storeLimits"), keysLimits, with(path, "storeAndForwardConfiguration", "storeLimits"), ps)
	}
	var h azHub
	if !decodeStrict(src, n, &h, path, ps) {
		return
	}
	if !h.Routes.isNull() {
		setRoutes(src, m, h.Routes.n, with(path, "routes"), minor(sv.Value) >= 1, ps)
	}
	if s := h.StoreAndForwardConfiguration; s != nil {
		var size *int64
		if s.StoreLimits != nil {
			size = s.StoreLimits.MaxSizeBytes
		}
		setStoreAndForward(m, s.TimeToLiveSecs, size, with(path, "storeAndForwardConfiguration"), ps)
	}
	if !h.MqttBroker.isNull() {
		m.Warnings = append(m.Warnings, "$edgeHub mqttBroker is ignored: ledge's hub is always a full MQTT broker, configured in ledge.yaml")
	}
	if !h.Integrity.isNull() {
		m.Warnings = append(m.Warnings, "$edgeHub integrity (Azure manifest signing) is not checked: ledge verifies its own ed25519 signatures (agent.trustedKeys)")
	}
}

// schemaOK accepts "1.1" and "1.1.0" for a supported "1.1".
func schemaOK(v string, supported []string) bool {
	return oneOf(strings.TrimSuffix(v, ".0"), supported...) || oneOf(v, supported...)
}

func minor(v string) int {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return 0
	}
	n := 0
	fmt.Sscanf(parts[1], "%d", &n)
	return n
}
