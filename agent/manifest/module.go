package manifest

import (
	"fmt"
	"math"
	"regexp"
	"sort"
	"strings"

	"github.com/distribution/reference"
)

// moduleNameRe is a module id: what Azure's schema allows, starting with a
// letter or digit (it is also the container's name).
var moduleNameRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_-]{0,63}$`)

// moduleInput is a module as read from either format, before validation.
type moduleInput struct {
	name          string
	path          []string // the module's own path
	image         string
	version       string
	status        string
	restartPolicy string
	pullPolicy    string
	startupOrder  *int64
	env           map[string]string
	envPath       []string
	co            *coInput // nil when absent
	coPath        []string
	digest        string
	// azure reads the policies as Json.NET reads enums: case-insensitively.
	azure bool
}

// UpstreamImagePrefix starts an image pulled through the parent in nested
// edge: "$upstream:443/azureiotedge-simulated-temperature-sensor:1.5".
const UpstreamImagePrefix = "$upstream"

// upstreamImageRe is edgeAgent's pattern for it: $upstream, then a port.
var upstreamImageRe = regexp.MustCompile(`^\$upstream:[1-9]`)

// upstreamPlaceholder stands for the parent while an image is checked.
const upstreamPlaceholder = "upstream.invalid"

// build validates a module, recording problems, and returns it.
func (in *moduleInput) build(ps *problems) Module {
	m := Module{
		Name: in.name, Image: strings.TrimSpace(in.image), Version: in.version,
		Status: StatusRunning, RestartPolicy: RestartAlways, ImagePullPolicy: PullOnCreate,
		StartupOrder: DefaultStartupOrder, Digest: in.digest,
	}
	if !moduleNameRe.MatchString(in.name) {
		ps.at(in.path, "%q is not a valid module name (1-64 letters, digits, '_' or '-', starting with a letter or digit)", in.name)
	}
	switch {
	case m.Image == "":
		ps.at(with(in.path, "image"), "an image is required")
	case strings.HasPrefix(m.Image, "$") && !upstreamImageRe.MatchString(m.Image):
		ps.at(with(in.path, "image"), "%q: an image starting with \"$\" must be $upstream:<port>/<repository>[:tag] (pulled through the parent), e.g. $upstream:443/azureiotedge-simulated-temperature-sensor:1.5", m.Image)
	default:
		check := m.Image
		if upstreamImageRe.MatchString(check) {
			check = upstreamPlaceholder + strings.TrimPrefix(check, UpstreamImagePrefix)
		}
		if _, err := reference.ParseNormalizedNamed(check); err != nil {
			ps.at(with(in.path, "image"), "%q is not a valid image reference: %v", m.Image, err)
		}
	}
	fold := func(s string) string {
		if in.azure {
			return strings.ToLower(s)
		}
		return s
	}
	if in.status != "" {
		m.Status = Status(fold(in.status))
		if !oneOf(m.Status, StatusRunning, StatusStopped) {
			ps.at(with(in.path, "status"), "%q is not a module status: want %s", in.status, list(StatusRunning, StatusStopped))
		}
	}
	if in.restartPolicy != "" {
		m.RestartPolicy = RestartPolicy(fold(in.restartPolicy))
		if !oneOf(m.RestartPolicy, RestartAlways, RestartOnFailure, RestartOnUnhealthy, RestartNever) {
			ps.at(with(in.path, "restartPolicy"), "%q is not a restart policy: want %s", in.restartPolicy,
				list(RestartAlways, RestartOnFailure, RestartOnUnhealthy, RestartNever))
		}
	}
	if in.pullPolicy != "" {
		m.ImagePullPolicy = PullPolicy(fold(in.pullPolicy))
		if !oneOf(m.ImagePullPolicy, PullOnCreate, PullNever, PullAlways) {
			ps.at(with(in.path, "imagePullPolicy"), "%q is not an image pull policy: want %s", in.pullPolicy,
				list(PullOnCreate, PullNever, PullAlways))
		}
	}
	if in.startupOrder != nil {
		if o := *in.startupOrder; o < 0 || o > math.MaxUint32 {
			ps.at(with(in.path, "startupOrder"), "%d is out of range: want 0 to %d (lower starts first)", o, uint32(math.MaxUint32))
		} else {
			m.StartupOrder = uint32(o)
		}
	}
	if len(in.env) > 0 {
		m.Env = make(map[string]string, len(in.env))
		names := make([]string, 0, len(in.env))
		for k := range in.env {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			if err := checkEnvName(k); err != "" {
				ps.at(with(in.envPath, k), "%s", err)
			}
			m.Env[k] = in.env[k]
		}
	}
	m.CreateOptions = []byte("{}")
	if in.co != nil && in.co.given {
		if co := readCreateOptions(ps.src, in.co, in.coPath, ps); co != nil {
			m.CreateOptions = co
		}
	}
	return m
}

func checkEnvName(k string) string {
	switch {
	case k == "":
		return "an environment variable name must not be empty"
	case strings.ContainsAny(k, "= \t\r\n\x00"):
		return fmt.Sprintf("%q is not a valid environment variable name (no '=', spaces or control characters)", k)
	}
	return ""
}

// checkModuleNames refuses two modules whose names differ only in case:
// their containers' names collide in Docker's DNS, which ignores case.
func checkModuleNames(ms []Module, path []string, ps *problems) {
	seen := map[string]string{}
	for _, m := range ms {
		low := strings.ToLower(m.Name)
		if first, dup := seen[low]; dup {
			ps.at(with(path, m.Name), "module %q is also defined as %q: names that differ only in case collide in Docker's DNS", m.Name, first)
			continue
		}
		seen[low] = m.Name
	}
}

// checkCredential validates one registry credential.
func checkCredential(c RegistryCredential, path []string, ps *problems) {
	switch {
	case c.Address == "":
		ps.at(with(path, "address"), "a registry address is required, e.g. myregistry.example.com or 127.0.0.1:5000")
	case strings.ContainsAny(c.Address, " \t\r\n"):
		ps.at(with(path, "address"), "%q: a registry address has no whitespace", c.Address)
	}
	if c.Username == "" {
		ps.at(with(path, "username"), "a username is required")
	}
}
