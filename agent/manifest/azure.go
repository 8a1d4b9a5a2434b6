package manifest

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"ledge/internal/yamlstrict"
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
	StartupOrder    *uint32            `yaml:"startupOrder"`
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

// azNormalizer reads the $edgeAgent and $edgeHub desired properties as
// edgeAgent reads them with Json.NET: keys case-insensitively, strings,
// numbers and booleans converted, unknown keys ignored (with a warning
// here).
// azNormalizer reads the twin of reader (edgeAgent, edgeHub or ledge) as
// Json.NET does; an unknown key is a warning naming who ignores it.
func azNormalizer(src *source, ps *problems, reader string) *normalizer {
	return &normalizer{
		tag:  "yaml",
		conv: func(string) conversion { return convJSONNet },
		problem: func(warn bool, path []string, n *yaml.Node, msg string) {
			if warn {
				ps.warnAt(n, path, "%s", msg)
			} else {
				ps.add(src.nodeError(n, path, msg))
			}
		},
		quiet: ps.quiet,
		unknown: func(_, key, suggestion string) string {
			msg := "unknown key, ignored as " + reader + " ignores it"
			if suggestion != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", suggestion)
			}
			return msg
		},
	}
}

// normalize reads node n for type T with z, then decodes it strictly.
func normalize[T any](src *source, z *normalizer, n *yaml.Node, path []string, ps *problems) (T, bool) {
	var v T
	before := len(ps.list)
	if !z.walk(n, reflect.TypeFor[T](), path, "") || len(ps.list) > before {
		return v, false
	}
	return v, decodeStrict(src, n, &v, path, ps)
}

// twinMetadata are the keys IoT Hub adds to a twin's desired properties;
// a manifest copied from a twin carries them.
var twinMetadata = []string{"$version", "$metadata"}

func dropTwinMetadata(n *yaml.Node) {
	if n.Kind != yaml.MappingNode {
		return
	}
	kept := n.Content[:0]
	for i := 0; i+1 < len(n.Content); i += 2 {
		if !slices.Contains(twinMetadata, n.Content[i].Value) {
			kept = append(kept, n.Content[i], n.Content[i+1])
		}
	}
	n.Content = kept
}

var keysTwinEntry = []string{desiredKey}

// foldKeys renames the keys of mapping n that match a known key but for
// case to that key; two keys that fold to the same name are an error.
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
		if l, ok := normalize[azLedge](src, azNormalizer(src, ps, "ledge"), ledge, ledgePath, ps); ok {
			m.Version = l.Version
			if err := checkVersion(m.Version); err != "" {
				ps.at(with(ledgePath, "version"), "%s", err)
			}
			setSection(m, SectionModels, l.Models, with(ledgePath, "models"), ps)
			setSection(m, SectionPipelines, l.Pipelines, with(ledgePath, "pipelines"), ps)
		}
	}
	if m.Version == "" {
		m.Notes = append(m.Notes, "no deployment version ($ledge desired property \"version\"): remote sources apply it whenever its content changes")
	}
	for _, t := range twins {
		setTwin(m, t.id, t.node, t.path, ps)
	}
	return m
}

func parseAzureAgent(src *source, m *Manifest, n *yaml.Node, path []string, ps *problems) {
	dropTwinMetadata(n)
	z := azNormalizer(src, ps, "edgeAgent")
	// The schema version first: a newer schema is refused by name, before
	// any of its fields is judged.
	sv := child(n, "schemaVersion")
	switch {
	case sv == nil:
		ps.at(with(path, "schemaVersion"), "schemaVersion is required (ledge reads %s)", list(AgentSchemaVersions...))
		return
	case sv.Kind != yaml.ScalarNode || !schemaOK(sv.Value, AgentSchemaVersions):
		ps.at(with(path, "schemaVersion"), "$edgeAgent schema version %q is not supported: ledge reads %s", sv.Value, list(AgentSchemaVersions...))
		return
	}
	a, ok := normalize[azAgent](src, z, n, path, ps)
	if !ok {
		return
	}
	if a.Runtime != nil {
		if a.Runtime.Type != "" && !strings.EqualFold(a.Runtime.Type, "docker") {
			ps.at(with(path, "runtime", "type"), "runtime type %q is not supported: want docker", a.Runtime.Type)
		}
		if s := a.Runtime.Settings; s != nil {
			for _, name := range slices.Sorted(maps.Keys(s.RegistryCredentials)) {
				c := s.RegistryCredentials[name]
				rc := RegistryCredential{Name: name, Address: strings.TrimSpace(c.Address), Username: c.Username, Password: c.Password}
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
		m.Notes = append(m.Notes, "systemModules (edgeAgent, edgeHub) are not run: ledge itself is the agent and the hub")
	}
	for _, name := range slices.Sorted(maps.Keys(a.SystemModules)) {
		sm := a.SystemModules[name]
		if !sm.isNull() && sm.n.Kind != yaml.MappingNode {
			ps.at(with(path, "systemModules", name), "a system module must be an object")
			continue
		}
		if sm.isNull() {
			continue
		}
		// Not run, but read as edgeAgent reads it: what it refuses in a
		// system module (no image, invalid or gapped createOptions, an
		// unknown status) refuses the deployment. What it would only warn
		// about is not told: ledge does not run these.
		sub := &problems{src: src, coBudget: ps.coBudget}
		parseAzureModule(src, azNormalizer(src, sub, "edgeAgent"), name, sm.n, with(path, "systemModules", name), sub)
		ps.list = append(ps.list, sub.list...)
		ps.coBudget = sub.coBudget
	}
	for _, name := range slices.Sorted(maps.Keys(a.Modules)) {
		mp := with(path, "modules", name)
		raw := a.Modules[name]
		if raw.isNull() || raw.n.Kind != yaml.MappingNode {
			ps.at(mp, "a module must be an object")
			continue
		}
		if mod, ok := parseAzureModule(src, z, name, raw.n, mp, ps); ok {
			m.Modules = append(m.Modules, mod)
		}
	}
	checkModuleNames(m.Modules, with(path, "modules"), ps)
}

func parseAzureModule(src *source, z *normalizer, name string, n *yaml.Node, path []string, ps *problems) (Module, bool) {
	am, ok := normalize[azModule](src, z, n, path, ps)
	if !ok {
		return Module{}, false
	}
	if am.Type != "" && !strings.EqualFold(am.Type, "docker") {
		ps.at(with(path, "type"), "module type %q is not supported: want docker", am.Type)
	}
	in := moduleInput{
		name: name, path: path, version: am.Version, status: am.Status, restartPolicy: am.RestartPolicy,
		pullPolicy: am.ImagePullPolicy, envPath: with(path, "env"), azure: true,
	}
	if am.StartupOrder != nil {
		o := int64(*am.StartupOrder)
		in.startupOrder = &o
	}
	sp := with(path, "settings")
	if am.Settings.isNull() || am.Settings.n.Kind != yaml.MappingNode {
		ps.at(sp, "settings {image, createOptions} are required")
		return Module{}, false
	}
	s := am.Settings.n
	// image and digest are found ignoring case; createOptions chunks are
	// matched apart.
	if !foldKeys(src, s, []string{"image", "digest"}, sp, ps) {
		return Module{}, false
	}
	for i := 0; i+1 < len(s.Content); i += 2 {
		k, v := s.Content[i].Value, s.Content[i+1]
		switch _, chunk := chunkKey(k); {
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
		case chunk:
		default:
			hint := didYouMean(k, "image", "createOptions", "digest")
			for _, mk := range []string{"version", "type", "status", "restartPolicy", "imagePullPolicy", "startupOrder", "env"} {
				if strings.EqualFold(k, mk) {
					hint = fmt.Sprintf("; %s belongs to the module, beside restartPolicy, not in settings", mk)
				}
			}
			ps.warnAt(s.Content[i], with(sp, k), "unknown key, ignored as edgeAgent ignores it (it reads image, createOptions, createOptions01 ... and digest)%s", hint)
		}
	}
	in.co, in.coPath = joinChunks(src, s, sp, ps)
	if len(am.Env) > 0 {
		in.env = map[string]string{}
		for _, k := range slices.Sorted(maps.Keys(am.Env)) {
			ep := with(path, "env", k)
			raw := am.Env[k]
			if raw.isNull() {
				// IoT Hub drops a desired property set to null: edgeAgent
				// never sees the entry.
				ps.warn(ep, "null: no variable (IoT Hub drops a null desired property)")
				continue
			}
			if raw.n.Kind != yaml.MappingNode {
				// Json.NET makes no EnvVal of anything else.
				ps.add(src.nodeError(raw.n, ep, fmt.Sprintf(`an env entry is {"value": ...}, got %s (edgeAgent refuses it too)`, describeNode(raw.n))))
				continue
			}
			e, ok := normalize[azEnv](src, z, raw.n, ep, ps)
			if !ok {
				continue
			}
			v := e.Value
			if v.n == nil {
				v.n = child(raw.n, "value") // an explicit null is not handed to rawNode
			}
			switch {
			case v.n == nil:
				// EnvVal(string value) takes a missing value as "".
				ps.warn(ep, `no "value": the variable is set empty, as edgeAgent sets it`)
				in.env[k] = ""
			case v.isNull():
				ps.warn(with(ep, "value"), "null: the variable is set empty, as edgeAgent sets it (IoT Hub drops a null desired property)")
				in.env[k] = ""
			case v.n.Kind != yaml.ScalarNode:
				ps.at(with(ep, "value"), "an env value must be a string, number or boolean")
			default:
				in.env[k] = dotNetText(v.n)
			}
		}
	}
	return in.build(ps), true
}

// dotNetText is a scalar as Json.NET reads it into a string: booleans
// "True" and "False", numbers as .NET writes them.
func dotNetText(n *yaml.Node) string {
	c := *n
	z := &normalizer{conv: func(string) conversion { return convJSONNet }, problem: func(bool, []string, *yaml.Node, string) {}}
	if z.scalar(&c, reflect.TypeFor[string](), nil, "") {
		return c.Value
	}
	return n.Value
}

func didYouMean(key string, known ...string) string {
	if s := yamlstrict.Suggest(key, known); s != "" {
		return fmt.Sprintf(" (did you mean %q?)", s)
	}
	return ""
}

func parseAzureHub(src *source, m *Manifest, n *yaml.Node, path []string, ps *problems) {
	dropTwinMetadata(n)
	z := azNormalizer(src, ps, "edgeHub")
	sv := child(n, "schemaVersion")
	if sv == nil {
		ps.at(with(path, "schemaVersion"), "schemaVersion is required (ledge reads %s)", list(HubSchemaVersions...))
		return
	}
	if sv.Kind != yaml.ScalarNode || !schemaOK(sv.Value, HubSchemaVersions) {
		ps.at(with(path, "schemaVersion"), "$edgeHub schema version %q is not supported: ledge reads %s", sv.Value, list(HubSchemaVersions...))
		return
	}
	h, ok := normalize[azHub](src, z, n, path, ps)
	if !ok {
		return
	}
	if !h.Routes.isNull() {
		setRoutes(src, m, h.Routes.n, with(path, "routes"), minor(sv.Value) >= 1, z, ps)
	}
	if s := h.StoreAndForwardConfiguration; s != nil {
		var size *int64
		if s.StoreLimits != nil {
			size = s.StoreLimits.MaxSizeBytes
		}
		setStoreAndForward(m, s.TimeToLiveSecs, size, with(path, "storeAndForwardConfiguration"), ps)
	}
	if !h.MqttBroker.isNull() {
		m.Notes = append(m.Notes, "$edgeHub mqttBroker is ignored: ledge's hub is always a full MQTT broker, configured in ledge.yaml")
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
