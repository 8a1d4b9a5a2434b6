package models

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"ledge/internal/yamlstrict"
)

// Config is the models: section of ledge.yaml. Every field is optional;
// [DefaultConfig] gives each its working value.
type Config struct {
	// Keep is how many versions of each model stay in the store (the
	// active and the desired one always stay, and count); older ones are
	// collected (default 3).
	Keep int `yaml:"keep"`
	// QuotaBytes bounds the bytes of all stored model files and partial
	// downloads (default 2 GiB). A download that does not fit after the
	// collectable versions are removed fails.
	QuotaBytes int64 `yaml:"quotaBytes"`
	// MaxModelBytes bounds one model file (default 1 GiB).
	MaxModelBytes int64 `yaml:"maxModelBytes"`
	// AllowHTTP allows plain http:// URLs (and redirects to them). Off by
	// default: the digest protects the content, but not the privacy of
	// what is fetched.
	AllowHTTP bool `yaml:"allowHTTP"`
	// FileRoots are the folders file:// sources may read from (with
	// everything below them, links followed). The data dir is always
	// allowed; nothing else is by default, so a deployment cannot make
	// ledge read (and hash) any file of the host.
	FileRoots []string `yaml:"fileRoots"`
	// CAFile adds CA certificates (PEM) that https:// and oci:// model
	// sources may be signed by: a private registry or model server.
	CAFile string `yaml:"caFile"`
	// RequireSignature refuses models that carry no signature when trusted
	// keys are configured (agent.trustedKeys). Off by default: a signed
	// manifest already vouches for the digests it lists.
	RequireSignature bool `yaml:"requireSignature"`
	// Download tunes the transfers.
	Download DownloadConfig `yaml:"download"`
}

// DownloadConfig tunes model downloads.
type DownloadConfig struct {
	// Concurrency is how many files download at once (default 2).
	Concurrency int `yaml:"concurrency"`
	// ConnectTimeout bounds connecting and waiting for the response
	// headers of one request (default 30s).
	ConnectTimeout time.Duration `yaml:"connectTimeout"`
	// StallTimeout cuts a transfer that received nothing for this long
	// (default 60s); it is then resumed. A slow transfer that keeps
	// receiving is never cut.
	StallTimeout time.Duration `yaml:"stallTimeout"`
	// Retries is how many times a failed transfer is tried again (resuming
	// where it broke) before the version is marked failed (default 5).
	Retries int `yaml:"retries"`
	// Backoff is the wait before the first retry; it doubles up to
	// MaxBackoff (defaults 1s and 1m).
	Backoff    time.Duration `yaml:"backoff"`
	MaxBackoff time.Duration `yaml:"maxBackoff"`
	// MaxRedirects bounds the redirects followed per request (default 5).
	MaxRedirects int `yaml:"maxRedirects"`
}

// DefaultConfig returns the store's defaults.
func DefaultConfig() Config {
	return Config{
		Keep:          3,
		QuotaBytes:    2 << 30,
		MaxModelBytes: 1 << 30,
		Download: DownloadConfig{
			Concurrency:    2,
			ConnectTimeout: 30 * time.Second,
			StallTimeout:   60 * time.Second,
			Retries:        5,
			Backoff:        time.Second,
			MaxBackoff:     time.Minute,
			MaxRedirects:   5,
		},
	}
}

// Validate checks the values, naming the field (under "models.").
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("models.%s: "+format, append([]any{field}, args...)...))
	}
	if c.Keep < 1 {
		bad("keep", "must be at least 1, got %d", c.Keep)
	}
	if c.QuotaBytes <= 0 {
		bad("quotaBytes", "must be positive, got %d", c.QuotaBytes)
	}
	if c.MaxModelBytes <= 0 {
		bad("maxModelBytes", "must be positive, got %d", c.MaxModelBytes)
	} else if c.QuotaBytes > 0 && c.MaxModelBytes > c.QuotaBytes {
		bad("maxModelBytes", "%d is over models.quotaBytes %d", c.MaxModelBytes, c.QuotaBytes)
	}
	for i, r := range c.FileRoots {
		if !filepath.IsAbs(r) {
			bad(yamlstrict.Index("fileRoots", i), "%q: want an absolute path", r)
		}
	}
	d := c.Download
	if d.Concurrency < 1 {
		bad("download.concurrency", "must be at least 1, got %d", d.Concurrency)
	}
	if d.ConnectTimeout <= 0 {
		bad("download.connectTimeout", "must be positive, got %s", d.ConnectTimeout)
	}
	if d.StallTimeout <= 0 {
		bad("download.stallTimeout", "must be positive, got %s", d.StallTimeout)
	}
	if d.Retries < 0 {
		bad("download.retries", "must not be negative, got %d", d.Retries)
	}
	if d.Backoff <= 0 {
		bad("download.backoff", "must be positive, got %s", d.Backoff)
	}
	if d.MaxBackoff < d.Backoff {
		bad("download.maxBackoff", "%s is below download.backoff %s", d.MaxBackoff, d.Backoff)
	}
	if d.MaxRedirects < 0 || d.MaxRedirects > 20 {
		bad("download.maxRedirects", "want 0 to 20, got %d", d.MaxRedirects)
	}
	return errors.Join(errs...)
}
