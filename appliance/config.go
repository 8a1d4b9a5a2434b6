package appliance

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"ledge/agent"
	"ledge/hub"
	"ledge/internal/yamlstrict"
	"ledge/models"
	"ledge/pipeline"
)

// Config is ledge.yaml. Every field is optional; [Default] gives each its
// working value.
type Config struct {
	// DeviceID names this appliance to the hub and the cloud (default: the
	// hostname).
	DeviceID string `yaml:"deviceId"`
	// DataDir holds the database, certificates, models and snapshots.
	DataDir string `yaml:"dataDir"`
	// Dev allows clients on loopback without credentials. Never on a
	// machine others can reach.
	Dev bool `yaml:"dev"`
	// Tags describe this appliance to the fleet (key: value, e.g. site:
	// berlin, hw: pi5): in its reported state, for the target conditions
	// of fleet deployments (docs/fleet.md).
	Tags map[string]string `yaml:"tags"`
	// ShutdownTimeout bounds the whole orderly stop.
	ShutdownTimeout time.Duration `yaml:"shutdownTimeout"`

	Log       LogConfig       `yaml:"log"`
	HTTP      HTTPConfig      `yaml:"http"`
	Database  DatabaseConfig  `yaml:"database"`
	Inference InferenceConfig `yaml:"inference"`
	Hub       hub.Config      `yaml:"hub"`
	Agent     agent.Config    `yaml:"agent"`
	Models    models.Config   `yaml:"models"`

	// Pipeline is the pipeline engine (event log retention, snapshots);
	// Pipelines are the vision pipelines to run (docs/pipelines.md).
	Pipeline  pipeline.Config `yaml:"pipeline"`
	Pipelines []pipeline.Spec `yaml:"pipelines"`
}

// LogConfig sets up log/slog.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
}

// HTTPConfig is the web server: health, metrics, API and dashboard.
type HTTPConfig struct {
	Listen string `yaml:"listen"` // address, default ":8080"
	// ListenTLS serves HTTPS (default ":8443") with the certificate of the
	// hub's CA (<dataDir>/hub/ca.pem); "" turns it off. Needs the hub.
	ListenTLS string `yaml:"listenTLS"`
	// PublicMetrics serves /metrics without credentials, for a Prometheus
	// that cannot send a bearer token. Default false.
	PublicMetrics bool `yaml:"publicMetrics"`
	// ReadTimeout bounds reading one request, body included (default
	// 60s); WriteTimeout writing one response (default 60s; event and
	// video streams and WebSockets are exempt); IdleTimeout closes a
	// keep-alive connection idle this long (default 2m).
	ReadTimeout  time.Duration `yaml:"readTimeout"`
	WriteTimeout time.Duration `yaml:"writeTimeout"`
	IdleTimeout  time.Duration `yaml:"idleTimeout"`
	// MaxAnonymousConnections bounds the connections that have not
	// authenticated (default 256): a new one beyond it closes the oldest.
	MaxAnonymousConnections int `yaml:"maxAnonymousConnections"`
}

// DatabaseConfig tunes SQLite.
type DatabaseConfig struct {
	// Synchronous is SQLite's synchronous pragma: "full" (default: what was
	// acknowledged survives a power cut) or "normal" (survives a crash of
	// ledge, faster on slow flash).
	Synchronous string `yaml:"synchronous"`
}

// InferenceConfig locates ONNX Runtime and sets its defaults.
type InferenceConfig struct {
	// Library is the ONNX Runtime shared library; $LEDGE_ORT_LIB wins over
	// it. Default /usr/local/lib/ledge/libonnxruntime.so.1, where `make
	// deps` puts it. On a Jetson, point it at NVIDIA's GPU build.
	Library string `yaml:"library"`
	// Providers are execution providers by preference, e.g. [cuda, cpu].
	Providers []string `yaml:"providers"`
	// TensorRTCache is where the TensorRT provider keeps the engines it
	// builds, so a restart does not build them again; a relative path is
	// inside the data dir. Default "tensorrt".
	TensorRTCache string `yaml:"tensorrtCache"`
}

// tensorRTCache is the engine cache directory, relative paths resolved in
// dataDir.
func (c InferenceConfig) tensorRTCache(dataDir string) string {
	if c.TensorRTCache == "" || filepath.IsAbs(c.TensorRTCache) {
		return c.TensorRTCache
	}
	return filepath.Join(dataDir, c.TensorRTCache)
}

// DefaultDataDir is /var/lib/ledge for root and ~/.local/share/ledge for
// other users.
func DefaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/ledge"
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "share", "ledge")
	}
	return "ledge-data"
}

// Default returns the configuration used when ledge.yaml says nothing.
func Default() Config {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "ledge"
	}
	return Config{
		DeviceID:        host,
		DataDir:         DefaultDataDir(),
		ShutdownTimeout: 5 * time.Second,
		Log:             LogConfig{Level: "info", Format: "text"},
		HTTP: HTTPConfig{Listen: ":8080", ListenTLS: ":8443", ReadTimeout: time.Minute, WriteTimeout: time.Minute,
			IdleTimeout: 2 * time.Minute, MaxAnonymousConnections: 256},
		Database:  DatabaseConfig{Synchronous: "full"},
		Inference: InferenceConfig{Providers: []string{"cpu"}, TensorRTCache: "tensorrt"},
		Hub:       hub.DefaultConfig(),
		Agent:     agent.DefaultConfig(),
		Models:    models.DefaultConfig(),
		Pipeline:  pipeline.DefaultConfig(),
	}
}

// ParseConfig decodes ledge.yaml over the defaults and validates it. name
// is used in errors (usually the file path).
func ParseConfig(name string, data []byte) (Config, error) {
	return parseConfig(name, data, "")
}

// parseConfig is ParseConfig with the relative paths resolved against dir
// (none when dir is "").
func parseConfig(name string, data []byte, dir string) (Config, error) {
	cfg := Default()
	if err := yamlstrict.Decode(data, &cfg); err != nil {
		return Config{}, fmt.Errorf("%s: %w", name, err)
	}
	if dir != "" {
		cfg.resolvePaths(dir)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("%s: %w", name, err)
	}
	return cfg, nil
}

// LoadConfig reads and parses the config file at path. Relative paths in
// it (dataDir, model files, video files...) are taken from the file's
// folder, not from the working directory.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return parseConfig(path, data, filepath.Dir(abs))
}

// Validate checks values the YAML types cannot, naming the field.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{field}, args...)...))
	}
	if err := c.Hub.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.DeviceID == "" || strings.ContainsAny(c.DeviceID, "/#+ $") || len(c.DeviceID) > 128 {
		bad("deviceId", "%q is not a valid device id (1-128 characters, no '/', '#', '+', '$' or spaces)", c.DeviceID)
	}
	if c.DataDir == "" {
		bad("dataDir", "must not be empty")
	}
	for k, v := range c.Tags {
		if k == "" || len(k) > 128 || strings.ContainsAny(k, ".[]$ \t\n'\"") {
			bad("tags", "%q is not a tag name (1-128 characters; no '.', '[', ']', '$', quotes or spaces: a target condition reads it as tags.<name>)", k)
		}
		if len(v) > 1024 {
			bad("tags."+k, "a tag value is at most 1024 bytes, got %d", len(v))
		}
	}
	if c.ShutdownTimeout <= 0 {
		bad("shutdownTimeout", "must be positive, got %s", c.ShutdownTimeout)
	}
	if _, err := c.Log.level(); err != nil {
		bad("log.level", "%v", err)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		bad("log.format", "%q: want text or json", c.Log.Format)
	}
	if c.HTTP.Listen == "" {
		bad("http.listen", "must not be empty")
	}
	for _, t := range []struct {
		key string
		d   time.Duration
	}{{"http.readTimeout", c.HTTP.ReadTimeout}, {"http.writeTimeout", c.HTTP.WriteTimeout}, {"http.idleTimeout", c.HTTP.IdleTimeout}} {
		if t.d < time.Second {
			bad(t.key, "must be at least 1s, got %s", t.d)
		}
	}
	if c.HTTP.MaxAnonymousConnections < 1 {
		bad("http.maxAnonymousConnections", "must be at least 1, got %d", c.HTTP.MaxAnonymousConnections)
	}
	switch c.Database.Synchronous {
	case "full", "normal":
	default:
		bad("database.synchronous", "%q: want full or normal", c.Database.Synchronous)
	}
	if err := c.Agent.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Models.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Pipeline.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := pipeline.ValidateSpecs(c.Pipelines, "pipelines"); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (l LogConfig) level() (slog.Level, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(l.Level)); err != nil {
		return 0, fmt.Errorf("%q: want debug, info, warn or error", l.Level)
	}
	return lv, nil
}

// NewLogger builds the process logger the config asks for.
func (l LogConfig) NewLogger(w *os.File) *slog.Logger {
	lv, err := l.level()
	if err != nil {
		lv = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lv}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
