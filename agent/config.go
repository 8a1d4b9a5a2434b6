package agent

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"ledge/internal/yamlstrict"
)

// Config is the agent's section of ledge.yaml (`agent:`). Every field is
// optional; [DefaultConfig] gives each its working value.
type Config struct {
	// Enabled runs the agent (default true). Without Docker the agent
	// still runs and reports the engine as unreachable.
	Enabled bool `yaml:"enabled"`
	// DockerHost is the engine's address; empty means $DOCKER_HOST or the
	// local socket unix:///var/run/docker.sock.
	DockerHost string `yaml:"dockerHost"`
	// Network is the Docker network modules join (created if missing);
	// on it the hub's hostname resolves to the host.
	Network string `yaml:"network"`
	// ContainerPrefix is put before module names to name containers
	// (default none: the container is named after its module).
	ContainerPrefix string `yaml:"containerPrefix"`
	// StopTimeout is how long a module gets to stop before it is killed.
	StopTimeout time.Duration `yaml:"stopTimeout"`
	// TrustedKeys are ed25519 public keys (a .pub file path, PEM text, or
	// base64 of the 32 raw bytes, optionally prefixed "ed25519:"). When
	// any is set, every manifest must carry a valid signature by one.
	TrustedKeys []string `yaml:"trustedKeys"`
	// AllowElevatedPermissions lets modules have elevated container
	// settings (Privileged, CapAdd, host namespaces, unconfined
	// SecurityOpt, binds of / or the Docker socket...; see privileges.go).
	// Off by default: a manifest asking for one is refused.
	AllowElevatedPermissions bool `yaml:"allowElevatedPermissions"`
	// AllowedBindSources are the host folders modules may bind (with
	// everything below them). A module's own <dataDir>/modules/<module>
	// is always allowed; /, the Docker socket and ledge's data dir never
	// are (without allowElevatedPermissions).
	AllowedBindSources []string `yaml:"allowedBindSources"`
	// UpstreamRegistry is what "$upstream" stands for in module images
	// and registry addresses ("$upstream:443/repo:tag" in nested edge,
	// pulled through the parent): a host name, or host:port to replace
	// the port written too. Default: the host of hub.upstream.
	UpstreamRegistry string `yaml:"upstreamRegistry"`

	Restart  RestartConfig  `yaml:"restart"`
	Rollback RollbackConfig `yaml:"rollback"`
	Pull     PullConfig     `yaml:"pull"`
	Sources  SourcesConfig  `yaml:"sources"`
	// ModuleLogging is the Docker log configuration of modules whose
	// manifest and createOptions set none: rotated json-file by default, so
	// module logs never fill the disk.
	ModuleLogging LogConfig `yaml:"moduleLogging"`
	// History is how many past deployments are kept (besides the current
	// and the last good one).
	History int `yaml:"history"`
}

// RestartConfig tunes restart back-off: the wait before restart n (from
// 0) is Unit * 2^n, at most Max.
type RestartConfig struct {
	Unit time.Duration `yaml:"unit"` // default 10s
	Max  time.Duration `yaml:"max"`  // default 5m
	// MaxAttempts stops restarting after this many restarts in a row
	// (reported failed). 0, the default, means never give up: "always"
	// means always.
	MaxAttempts int `yaml:"maxAttempts"`
	// ResetAfter clears the restart count of a module that stayed up this
	// long (default 10m).
	ResetAfter time.Duration `yaml:"resetAfter"`
}

// RollbackConfig says when a deployment that does not converge is rolled
// back to the last good one.
type RollbackConfig struct {
	// Auto rolls back automatically (default true).
	Auto bool `yaml:"auto"`
	// Timeout is how long a deployment may go without progress before it
	// counts as failed; image bytes arriving are progress (default 5m).
	Timeout time.Duration `yaml:"timeout"`
	// StableFor is how long every module must have run without a restart
	// for the deployment to count as converged (default 15s).
	StableFor time.Duration `yaml:"stableFor"`
}

// PullConfig tunes image pulls.
type PullConfig struct {
	// Concurrency is how many images are pulled at once (default 2).
	Concurrency int `yaml:"concurrency"`
	// StallTimeout fails a pull that receives nothing for this long
	// (default 5m); a slow pull that keeps receiving is never cut.
	StallTimeout time.Duration `yaml:"stallTimeout"`
}

// SourcesConfig lists where deployments come from besides the CLI/API.
type SourcesConfig struct {
	HTTP HTTPSourceConfig `yaml:"http"`
	MQTT MQTTSourceConfig `yaml:"mqtt"`
}

// HTTPSourceConfig polls a URL with ETag/If-None-Match.
type HTTPSourceConfig struct {
	// URL of the manifest (or of a signed envelope); empty disables.
	URL string `yaml:"url"`
	// SignatureURL is the detached signature; default URL + ".sig" when
	// trusted keys are configured.
	SignatureURL string `yaml:"signatureUrl"`
	// Interval between polls (default 60s).
	Interval time.Duration `yaml:"interval"`
	// Timeout of one request (default 30s).
	Timeout time.Duration `yaml:"timeout"`
}

// MQTTSourceConfig receives deployments as a retained message on the
// upstream broker and publishes the reported state there.
type MQTTSourceConfig struct {
	// Enabled subscribes when an upstream is configured (default true).
	Enabled bool `yaml:"enabled"`
	// Topic of the deployment; {device} is replaced by the device id.
	Topic string `yaml:"topic"`
	// ReportedTopic receives the reported state (retained).
	ReportedTopic string `yaml:"reportedTopic"`
}

// LogConfig is a Docker log driver with its options.
type LogConfig struct {
	Type   string            `yaml:"type"`
	Config map[string]string `yaml:"config"`
}

// DefaultConfig returns the agent's defaults.
func DefaultConfig() Config {
	return Config{
		Enabled:     true,
		Network:     "ledge",
		StopTimeout: 10 * time.Second,
		Restart:     RestartConfig{Unit: 10 * time.Second, Max: 5 * time.Minute, ResetAfter: 10 * time.Minute},
		Rollback:    RollbackConfig{Auto: true, Timeout: 5 * time.Minute, StableFor: 15 * time.Second},
		Pull:        PullConfig{Concurrency: 2, StallTimeout: 5 * time.Minute},
		Sources: SourcesConfig{
			HTTP: HTTPSourceConfig{Interval: time.Minute, Timeout: 30 * time.Second},
			MQTT: MQTTSourceConfig{Enabled: true, Topic: "ledge/{device}/deployment", ReportedTopic: "ledge/{device}/deployment/reported"},
		},
		ModuleLogging: LogConfig{Type: "json-file", Config: map[string]string{"max-size": "10m", "max-file": "3"}},
		History:       20,
	}
}

// Validate checks the values, naming the field (under "agent.").
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("agent.%s: "+format, append([]any{field}, args...)...))
	}
	if c.Network != "" && strings.ContainsAny(c.Network, " /\t") {
		bad("network", "%q is not a Docker network name", c.Network)
	}
	if c.ContainerPrefix != "" && !containerNameRe.MatchString(c.ContainerPrefix+"x") {
		bad("containerPrefix", "%q cannot start a container name (letters, digits, '_', '.', '-')", c.ContainerPrefix)
	}
	if c.StopTimeout <= 0 {
		bad("stopTimeout", "must be positive, got %s", c.StopTimeout)
	}
	if _, err := ParseTrustedKeys(c.TrustedKeys); err != nil {
		bad("trustedKeys", "%v", err)
	}
	for i, s := range c.AllowedBindSources {
		switch {
		case !filepath.IsAbs(s):
			bad(yamlstrict.Index("allowedBindSources", i), "%q: want an absolute host path", s)
		case filepath.Clean(s) == "/":
			bad(yamlstrict.Index("allowedBindSources", i), "\"/\" would let modules bind every host path: list the folders they need, or set agent.allowElevatedPermissions")
		}
	}
	if r := c.UpstreamRegistry; r != "" && (strings.ContainsAny(r, " \t/$") || strings.Contains(r, "://")) {
		bad("upstreamRegistry", "%q: want the parent registry's host name or host:port (no scheme, path or $)", r)
	}
	if c.Restart.Unit <= 0 {
		bad("restart.unit", "must be positive, got %s", c.Restart.Unit)
	}
	if c.Restart.Max < c.Restart.Unit {
		bad("restart.max", "%s is below restart.unit %s", c.Restart.Max, c.Restart.Unit)
	}
	if c.Restart.MaxAttempts < 0 {
		bad("restart.maxAttempts", "must be 0 (never give up) or positive, got %d", c.Restart.MaxAttempts)
	}
	if c.Restart.ResetAfter <= 0 {
		bad("restart.resetAfter", "must be positive, got %s", c.Restart.ResetAfter)
	}
	if c.Rollback.Timeout <= 0 {
		bad("rollback.timeout", "must be positive, got %s", c.Rollback.Timeout)
	}
	if c.Rollback.StableFor < 0 {
		bad("rollback.stableFor", "must not be negative, got %s", c.Rollback.StableFor)
	}
	if c.Pull.Concurrency < 1 {
		bad("pull.concurrency", "must be at least 1, got %d", c.Pull.Concurrency)
	}
	if c.Pull.StallTimeout <= 0 {
		bad("pull.stallTimeout", "must be positive, got %s", c.Pull.StallTimeout)
	}
	if u := c.Sources.HTTP.URL; u != "" {
		if p, err := url.Parse(u); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			bad("sources.http.url", "%q is not an http(s) URL", u)
		}
		if c.Sources.HTTP.Interval < time.Second {
			bad("sources.http.interval", "must be at least 1s, got %s", c.Sources.HTTP.Interval)
		}
		if c.Sources.HTTP.Timeout <= 0 {
			bad("sources.http.timeout", "must be positive, got %s", c.Sources.HTTP.Timeout)
		}
	}
	if c.Sources.MQTT.Enabled && (c.Sources.MQTT.Topic == "" || strings.ContainsAny(c.Sources.MQTT.Topic, "#+")) {
		bad("sources.mqtt.topic", "%q: want a topic without wildcards", c.Sources.MQTT.Topic)
	}
	if c.ModuleLogging.Type == "" {
		bad("moduleLogging.type", "a Docker log driver is required, e.g. json-file or local")
	}
	if c.History < 1 {
		bad("history", "must be at least 1, got %d", c.History)
	}
	return errors.Join(errs...)
}
