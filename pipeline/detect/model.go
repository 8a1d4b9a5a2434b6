package detect

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"

	"ledge/inference"
	"ledge/internal/fault"
)

// Box is a rectangle in frame pixels; Detection is one object found in a
// frame. They are package inference's types: the engine uses them as
// they are.
type (
	Box       = inference.Box
	Detection = inference.Detection
)

// Spec configures the detect stage (a pipeline's detect: section).
type Spec struct {
	// Model is a model file (a path: it contains '/' or ends in .onnx) or
	// the name of a model in the model store.
	Model string `yaml:"model" json:"model"`
	// Kind is the model family (auto, yolox, yolov8, yolov5, fastestdet);
	// default auto.
	Kind string `yaml:"kind,omitempty" json:"kind,omitempty"`
	// Threshold is the minimum score, in (0, 1]; default 0.25.
	Threshold float64 `yaml:"threshold,omitempty" json:"threshold,omitempty"`
	// IoU is the NMS overlap threshold, in (0, 1]; default 0.45.
	IoU float64 `yaml:"iou,omitempty" json:"iou,omitempty"`
	// Classes keeps only these labels (default: all).
	Classes []string `yaml:"classes,omitempty" json:"classes,omitempty"`
	// MaxFPS caps detections per second (0: every frame that arrives).
	MaxFPS float64 `yaml:"maxFps,omitempty" json:"maxFps,omitempty"`
	// Every runs the detector on every Nth frame only (default 1).
	Every int `yaml:"every,omitempty" json:"every,omitempty"`
	// Sessions and Threads set the model's ONNX Runtime session layout
	// (default: pipeline.detector in ledge.yaml). Pipelines that share a
	// model with the same layout share its sessions.
	Sessions int `yaml:"sessions,omitempty" json:"sessions,omitempty"`
	Threads  int `yaml:"threads,omitempty" json:"threads,omitempty"`
}

// Layout is an ONNX Runtime session layout: Sessions sessions (0: one per
// core) of Threads intra-op threads each (0: 1).
type Layout struct {
	Sessions, Threads int
}

// layout is the spec's session layout, the engine's default filling in
// what the spec leaves out.
func (d *Spec) layout(def Layout) Layout {
	l := Layout{Sessions: d.Sessions, Threads: d.Threads}
	if l.Sessions == 0 {
		l.Sessions = def.Sessions
	}
	if l.Sessions == 0 {
		l.Sessions = runtime.NumCPU()
	}
	if l.Threads == 0 {
		l.Threads = max(def.Threads, 1)
	}
	return l
}

// IsPath reports whether a detect.model value is a file path rather than
// a model name: it contains a '/' or ends in ".onnx".
func IsPath(model string) bool {
	return strings.Contains(model, "/") || strings.HasSuffix(strings.ToLower(model), ".onnx")
}

// Resolver finds a model by name (the model store). The appliance
// provides it; without one, every name is unknown.
type Resolver interface {
	Resolve(name string) (Model, error)
}

// Model is what a model name stands for.
type Model struct {
	Path    string   // the ONNX file
	Kind    string   // model family; "" or auto to detect
	Labels  []string // class names; nil for the model's own
	Version string   // shown with every result the model produces
	// InputWidth and InputHeight set the input size of a model whose
	// input is dynamic (0: from the model).
	InputWidth, InputHeight int
}

// ErrUnknownModel is returned (wrapped) for a model name nobody knows.
var ErrUnknownModel = fault.New(fault.NotFound, "unknown model")

// ErrModelNotReady is returned (wrapped) by a resolver for a model name it
// knows but cannot serve yet (its first version is downloading). A stage
// on such a name runs without a model until one is prepared and committed.
var ErrModelNotReady = fault.New(fault.Unavailable, "model not ready")

// resolve turns d.Model into a file, kind, labels and version: a path is
// its own version (a digest of its content), a name asks res.
func (d *Spec) resolve(res Resolver) (Model, error) {
	if IsPath(d.Model) {
		v, err := fileVersion(d.Model)
		if err != nil {
			return Model{}, err
		}
		return Model{Path: d.Model, Kind: d.Kind, Version: v}, nil
	}
	if res == nil {
		return Model{}, fmt.Errorf("%w %q: no model store in this ledge yet; give a path to an .onnx file", ErrUnknownModel, d.Model)
	}
	m, err := res.Resolve(d.Model)
	if err != nil {
		return Model{}, err
	}
	return d.withKind(m), nil
}

// withKind is m with the spec's kind, when the spec names one.
func (d *Spec) withKind(m Model) Model {
	if d.Kind != "" && !strings.EqualFold(d.Kind, "auto") {
		m.Kind = d.Kind
	}
	return m
}

// key is the detector that runs m for d with the default layout def.
func (d *Spec) key(m Model, def Layout) key {
	l := d.layout(def)
	return key{path: m.Path, kind: strings.ToLower(m.Kind), labels: strings.Join(m.Labels, "\n"),
		sessions: l.Sessions, threads: l.Threads, inW: m.InputWidth, inH: m.InputHeight}
}

// label names m in errors: a model from the store by name and version
// (its file name means nothing to the operator), a file by its path.
func (d *Spec) label(m Model) string {
	if IsPath(d.Model) {
		return m.Path
	}
	return d.Model + "@" + m.Version
}

// fileVersion names a model file's content: "sha256:" and 12 hex digits.
func fileVersion(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))[:12], nil
}

// labels splits a key's labels back into a list.
func (k key) labelList() []string {
	if k.labels == "" {
		return nil
	}
	return slices.Clone(strings.Split(k.labels, "\n"))
}
