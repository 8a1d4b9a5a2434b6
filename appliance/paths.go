package appliance

import (
	"crypto/ed25519"
	"encoding/base64"
	"path/filepath"
	"strings"

	"ledge/pipeline"
	"ledge/pipeline/source"
)

// resolvePaths makes the relative paths of a config file absolute against
// dir, the file's folder: `dataDir: ledge-data` and `model: m.onnx` mean
// "beside ledge.yaml", whatever folder ledge was started from. Absolute
// paths, model names, URLs and a library name without a '/' (left to the
// dynamic loader's search path) are kept.
func (c *Config) resolvePaths(dir string) {
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	c.DataDir = abs(c.DataDir)
	if strings.Contains(c.Inference.Library, "/") {
		c.Inference.Library = abs(c.Inference.Library)
	}
	c.Pipeline.SnapshotDir = abs(c.Pipeline.SnapshotDir)
	c.Hub.TLS.ClientCAFile = abs(c.Hub.TLS.ClientCAFile)
	c.Hub.Upstream.CAFile = abs(c.Hub.Upstream.CAFile)
	c.Models.CAFile = abs(c.Models.CAFile)
	for i, k := range c.Agent.TrustedKeys {
		if isKeyFile(k) {
			c.Agent.TrustedKeys[i] = abs(k)
		}
	}
	for i := range c.Pipelines {
		resolveSpecPaths(&c.Pipelines[i], abs)
	}
}

// resolveSpecPaths resolves a pipeline's model file and its file or image
// source with abs.
func resolveSpecPaths(s *pipeline.Spec, abs func(string) string) {
	if d := s.Detect; d != nil && pipeline.IsModelPath(d.Model) {
		d.Model = abs(d.Model)
	}
	t, err := s.Source.Parse()
	if err != nil || filepath.IsAbs(t.Path) || t.Path == "" {
		return
	}
	switch u := strings.TrimSpace(s.Source.URL); {
	case t.Kind == source.KindFile && !strings.Contains(u, ":"):
		s.Source.URL = abs(t.Path)
	case t.Kind == source.KindFile:
		s.Source.URL = "file:" + abs(t.Path)
	case t.Kind == source.KindImages:
		s.Source.URL = "images:" + abs(t.Path)
	}
}

// isKeyFile tells a trustedKeys entry that names a file from a key given
// inline (PEM, "ed25519:..." or base64), as agent reads them.
func isKeyFile(k string) bool {
	if strings.HasPrefix(k, "-----BEGIN") || strings.HasPrefix(k, "ed25519:") {
		return false
	}
	raw, err := base64.StdEncoding.DecodeString(k)
	return err != nil || len(raw) != ed25519.PublicKeySize
}
