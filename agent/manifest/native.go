package manifest

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"go.yaml.in/yaml/v3"
)

// NativeSchemaVersions are the native schema versions ledge reads.
var NativeSchemaVersions = []string{"1.0"}

// nativeDoc is the top level of a native manifest.
type nativeDoc struct {
	SchemaVersion       string                      `yaml:"schemaVersion"`
	Version             string                      `yaml:"version"`
	Modules             map[string]rawNode          `yaml:"modules"`
	RegistryCredentials map[string]nativeCredential `yaml:"registryCredentials"`
	Logging             *nativeLogging              `yaml:"logging"`
	Twins               map[string]rawNode          `yaml:"twins"`
	Models              rawNode                     `yaml:"models"`
	Pipelines           rawNode                     `yaml:"pipelines"`
	Routes              rawNode                     `yaml:"routes"`
	StoreAndForward     *nativeStoreAndForward      `yaml:"storeAndForward"`
}

type nativeModule struct {
	Image           string            `yaml:"image"`
	Version         string            `yaml:"version"`
	Status          string            `yaml:"status"`
	RestartPolicy   string            `yaml:"restartPolicy"`
	ImagePullPolicy string            `yaml:"imagePullPolicy"`
	StartupOrder    *int64            `yaml:"startupOrder"`
	Env             map[string]string `yaml:"env"`
	CreateOptions   rawNode           `yaml:"createOptions"`
	Twin            rawNode           `yaml:"twin"`
}

type nativeCredential struct {
	Address  string `yaml:"address"`
	Username string `yaml:"username"`
	Password string `yaml:"password"`
}

type nativeLogging struct {
	Type   string            `yaml:"type"`
	Config map[string]string `yaml:"config"`
}

type nativeStoreAndForward struct {
	TimeToLiveSecs *int64 `yaml:"timeToLiveSecs"`
	MaxSizeBytes   *int64 `yaml:"maxSizeBytes"`
}

// nativeNormalizer reads ledge's own format strictly: unknown keys are
// errors, numbers must be numbers (range-checked with the path as
// written), any scalar is a string.
func nativeNormalizer(src *source, ps *problems) *normalizer {
	return &normalizer{
		tag:    "yaml",
		strict: true,
		conv:   func(string) conversion { return convYAML },
		problem: func(warn bool, path []string, n *yaml.Node, msg string) {
			if warn {
				ps.warnAt(n, path, "%s", msg)
			} else {
				ps.add(src.nodeError(n, path, msg))
			}
		},
		unknown: func(_, key, suggestion string) string {
			msg := fmt.Sprintf("unknown key %q", key)
			if suggestion != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", suggestion)
			}
			return msg
		},
	}
}

func parseNative(src *source, root *yaml.Node, ps *problems) *Manifest {
	m := &Manifest{Format: FormatYAML}
	z := nativeNormalizer(src, ps)
	doc, ok := normalize[nativeDoc](src, z, root, nil, ps)
	if !ok {
		return m
	}
	if doc.SchemaVersion != "" && !oneOf(doc.SchemaVersion, NativeSchemaVersions...) {
		ps.at([]string{"schemaVersion"}, "schema version %q is not supported: this ledge reads native manifests of schema %s", doc.SchemaVersion, list(NativeSchemaVersions...))
		return m
	}
	m.Version = doc.Version
	if m.Version == "" {
		ps.at([]string{"version"}, "a version is required (a newer version wins; e.g. \"7\" or \"2024.06.1\")")
	} else if err := checkVersion(m.Version); err != "" {
		ps.at([]string{"version"}, "%s", err)
	}

	names := slices.Sorted(maps.Keys(doc.Modules))
	for _, name := range names {
		path := []string{"modules", name}
		raw := doc.Modules[name]
		var nm nativeModule
		if !raw.isNull() {
			if nm, ok = normalize[nativeModule](src, z, raw.n, path, ps); !ok {
				continue
			}
		}
		in := moduleInput{
			name: name, path: path, image: nm.Image, version: nm.Version, status: nm.Status,
			restartPolicy: nm.RestartPolicy, pullPolicy: nm.ImagePullPolicy, startupOrder: nm.StartupOrder,
			env: nm.Env, envPath: with(path, "env"), coPath: with(path, "createOptions"),
		}
		if !nm.CreateOptions.isNull() {
			n := nm.CreateOptions.n
			switch {
			case n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str":
				in.co = &coInput{text: n.Value, chunks: []coChunk{{key: "createOptions"}}, given: true}
			case n.Kind == yaml.MappingNode:
				in.co = &coInput{node: n, given: true}
			default:
				ps.at(in.coPath, "createOptions must be an object (or a string holding one)")
			}
		}
		m.Modules = append(m.Modules, in.build(ps))
		if !nm.Twin.isNull() {
			setTwin(m, name, nm.Twin.n, with(path, "twin"), ps)
		}
	}
	checkModuleNames(m.Modules, []string{"modules"}, ps)
	for _, id := range slices.Sorted(maps.Keys(doc.Twins)) {
		path := []string{"twins", id}
		if m.Twins[id] != nil {
			ps.at(path, "the twin of %q is also given as modules.%s.twin: give it once", id, id)
			continue
		}
		if !doc.Twins[id].isNull() {
			setTwin(m, id, doc.Twins[id].n, path, ps)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(doc.RegistryCredentials)) {
		c := doc.RegistryCredentials[name]
		rc := RegistryCredential{Name: name, Address: c.Address, Username: c.Username, Password: c.Password}
		checkCredential(rc, []string{"registryCredentials", name}, ps)
		m.RegistryCredentials = append(m.RegistryCredentials, rc)
	}
	if doc.Logging != nil {
		m.Logging = &Logging{Type: doc.Logging.Type, Config: doc.Logging.Config}
		if m.Logging.Type == "" {
			ps.at([]string{"logging", "type"}, "a Docker log driver is required, e.g. json-file or local")
		}
	}
	setSection(m, SectionModels, doc.Models, []string{"models"}, ps)
	setSection(m, SectionPipelines, doc.Pipelines, []string{"pipelines"}, ps)
	if !doc.Routes.isNull() {
		setRoutes(src, m, doc.Routes.n, []string{"routes"}, true, nil, ps)
	}
	if s := doc.StoreAndForward; s != nil {
		setStoreAndForward(m, s.TimeToLiveSecs, s.MaxSizeBytes, []string{"storeAndForward"}, ps)
	}
	return m
}

// setTwin records a module's desired twin properties: a JSON object.
func setTwin(m *Manifest, id string, n *yaml.Node, path []string, ps *problems) {
	if n.Kind != yaml.MappingNode {
		ps.at(path, "desired twin properties must be an object")
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i].Value; k == "" || containsAny(k, ".$ ") || len(k) > 1024 {
			ps.at(with(path, k), "%q is not a valid twin property name (1-1024 bytes, no '.', '$' or space)", k)
			return
		}
	}
	canon, err := canonicalNode(n)
	if err != nil {
		ps.at(path, "%v", err)
		return
	}
	if m.Twins == nil {
		m.Twins = map[string]json.RawMessage{}
	}
	m.Twins[id] = canon
}

// setSection keeps an owner's section as canonical JSON.
func setSection(m *Manifest, name string, r rawNode, path []string, ps *problems) {
	if r.isNull() {
		return
	}
	canon, err := canonicalNode(r.n)
	if err != nil {
		ps.at(path, "%v", err)
		return
	}
	if m.Sections == nil {
		m.Sections = map[string]json.RawMessage{}
	}
	m.Sections[name] = canon
}

// Route is one entry of the routes section as the agent hands it on: the
// route text (validated by the hub), its priority (0 highest ... 9; nil
// when not set) and its TTL in seconds (0: the global TTL).
type Route struct {
	Route          string `json:"route"`
	Priority       *int   `json:"priority,omitempty"`
	TimeToLiveSecs uint32 `json:"timeToLiveSecs,omitempty"`
}

type routeObject struct {
	Route          string `yaml:"route"`
	Priority       *int64 `yaml:"priority"`
	TimeToLiveSecs *int64 `yaml:"timeToLiveSecs"`
}

// setRoutes reads routes (name -> "FROM ... INTO ..." or {route, priority,
// timeToLiveSecs}) into the routes section as name -> Route. Route objects
// are read with z when given (Azure: leniently), else strictly.
func setRoutes(src *source, m *Manifest, n *yaml.Node, path []string, objects bool, z *normalizer, ps *problems) {
	if n.Kind != yaml.MappingNode {
		ps.at(path, "routes must be an object of name: route")
		return
	}
	out := map[string]Route{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		name, v := n.Content[i].Value, n.Content[i+1]
		rp := with(path, name)
		if name == "" || containsAny(name, ".$# ") {
			ps.at(rp, "%q is not a valid route name (no '.', '$', '#' or space)", name)
			continue
		}
		var r Route
		switch {
		case v.Kind == yaml.ScalarNode && v.ShortTag() == "!!str":
			r.Route = v.Value
		case v.Kind == yaml.MappingNode && objects:
			var ro routeObject
			if z != nil {
				var ok bool
				if ro, ok = normalize[routeObject](src, z, v, rp, ps); !ok {
					continue
				}
			} else if !decodeStrict(src, v, &ro, rp, ps) {
				continue
			}
			r.Route = ro.Route
			if ro.Priority != nil {
				if p := *ro.Priority; p < 0 || p > 9 {
					ps.at(with(rp, "priority"), "%d is out of range: want 0 (highest) to 9 (lowest)", p)
				} else {
					pi := int(p)
					r.Priority = &pi
				}
			}
			if ro.TimeToLiveSecs != nil {
				if t := *ro.TimeToLiveSecs; t < 0 || t > 1<<32-1 {
					ps.at(with(rp, "timeToLiveSecs"), "%d is out of range: want 0 (the global TTL) to 4294967295", t)
				} else {
					r.TimeToLiveSecs = uint32(t)
				}
			}
		case v.Kind == yaml.MappingNode:
			ps.at(rp, "route objects need $edgeHub schemaVersion 1.1 or later; in 1.0 a route is a string")
			continue
		default:
			ps.at(rp, "a route is a string \"FROM ... INTO ...\" or an object {route, priority, timeToLiveSecs}")
			continue
		}
		if r.Route == "" {
			ps.at(with(rp, "route"), "the route text is empty")
			continue
		}
		out[name] = r
	}
	canon, err := json.Marshal(out)
	if err != nil {
		ps.at(path, "%v", err)
		return
	}
	if m.Sections == nil {
		m.Sections = map[string]json.RawMessage{}
	}
	m.Sections[SectionRoutes] = canon
}

// StoreAndForward is the storeAndForward section as the agent hands it on.
type StoreAndForward struct {
	// TimeToLiveSecs is the global message TTL; negative means none, nil
	// the hub's default.
	TimeToLiveSecs *int64 `json:"timeToLiveSecs,omitempty"`
	// MaxSizeBytes bounds the store; nil for the hub's default.
	MaxSizeBytes *int64 `json:"maxSizeBytes,omitempty"`
}

func setStoreAndForward(m *Manifest, ttl, size *int64, path []string, ps *problems) {
	if size != nil && *size <= 0 {
		ps.at(with(path, "maxSizeBytes"), "%d: want a positive number of bytes", *size)
		return
	}
	canon, err := json.Marshal(StoreAndForward{TimeToLiveSecs: ttl, MaxSizeBytes: size})
	if err != nil {
		ps.at(path, "%v", err)
		return
	}
	if m.Sections == nil {
		m.Sections = map[string]json.RawMessage{}
	}
	m.Sections[SectionStoreAndForward] = canon
}

func containsAny(s, chars string) bool {
	for _, c := range chars {
		for _, d := range s {
			if c == d {
				return true
			}
		}
	}
	return false
}

// checkVersion bounds a deployment version.
func checkVersion(v string) string {
	if len(v) > 128 {
		return fmt.Sprintf("a version is at most 128 characters, got %d", len(v))
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return "a version has no control characters"
		}
	}
	return ""
}
