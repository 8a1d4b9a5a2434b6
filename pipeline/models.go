package pipeline

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"ledge/internal/fault"
	"ledge/pipeline/detect"
)

// The engine's side of model activation: the model store (through the
// appliance) resolves pipelines' model names, and switches a name to a
// new version in two steps, PrepareModel then Commit or Abort.

// ModelResolver finds a model by name (the model store); see
// [detect.Resolver].
type ModelResolver = detect.Resolver

// ResolvedModel is what a model name stands for; see [detect.Model].
type ResolvedModel = detect.Model

// ErrUnknownModel is returned (wrapped) for a model name nobody knows.
var ErrUnknownModel = detect.ErrUnknownModel

// ErrModelNotReady is returned (wrapped) by a resolver for a model name it
// knows but cannot serve yet (its first version is downloading). A
// pipeline on such a name runs without detection until a ModelSwap brings
// the model in.
var ErrModelNotReady = detect.ErrModelNotReady

// ModelSwap is a new version of a model name, loaded and warmed in every
// running pipeline whose detect.model is the name while they keep serving
// the old one. Commit switches them between two frames; Abort releases
// the new version. Until one of them is called the set of pipelines holds
// still (Apply, Put, Reload and the like wait), so no pipeline built
// meanwhile misses the switch. Not safe for concurrent use.
type ModelSwap struct {
	e       *Engine
	name    string
	version string
	swaps   []pipelineSwap
	done    bool
}

type pipelineSwap struct {
	pipeline string
	w        *detect.Swap
}

// PrepareModel prepares m, the version name is about to stand for: it
// loads and warms m in every running pipeline on name (at low priority,
// beside the model serving), or, when none runs it, loads it once on its
// own and runs it on a blank frame to prove it serves. If a load or a
// warm-up fails, or ctx ends, what was prepared is released, nothing
// changes and the error says why (a model that cannot serve is
// fault.Invalid). On success the caller records m as what name stands
// for, then calls Commit, or Abort if it could not record it.
func (e *Engine) PrepareModel(ctx context.Context, name string, m ResolvedModel) (*ModelSwap, error) {
	if err := e.lockApply(ctx); err != nil {
		return nil, err
	}
	sw := &ModelSwap{e: e, name: name, version: m.Version}
	e.mu.Lock()
	stopped := e.stopped
	var ins []*instance
	for _, in := range e.running {
		if in.det != nil && in.det.Model() == name {
			ins = append(ins, in)
		}
	}
	e.mu.Unlock()
	if stopped {
		e.unlockApply()
		return nil, fault.New(fault.Unavailable, "pipeline engine stopped")
	}
	slices.SortFunc(ins, func(a, b *instance) int { return strings.Compare(a.spec.Name, b.spec.Name) })
	fail := func(err error) (*ModelSwap, error) {
		sw.Abort()
		if ctx.Err() != nil {
			return nil, err
		}
		return nil, fault.Wrap(fault.Invalid, err)
	}
	for _, in := range ins {
		w, err := in.det.Prepare(ctx, m)
		if err != nil {
			return fail(fmt.Errorf("pipeline %s: %w", in.spec.Name, err))
		}
		if w != nil {
			sw.swaps = append(sw.swaps, pipelineSwap{in.spec.Name, w})
		}
	}
	if len(ins) == 0 {
		if err := e.pool.Check(ctx, name, m); err != nil {
			return fail(err)
		}
	}
	return sw, nil
}

// Pipelines names the pipelines Commit switches to the new version.
func (s *ModelSwap) Pipelines() []string {
	out := make([]string, len(s.swaps))
	for i, p := range s.swaps {
		out[i] = p.pipeline
	}
	return out
}

// Commit switches the pipelines to the new version between two frames
// (each releases the old one once its last frame on it is done) and lets
// the set of pipelines change again. Calls after the first, or after
// Abort, do nothing.
func (s *ModelSwap) Commit() {
	if s.done {
		return
	}
	s.done = true
	defer s.e.unlockApply()
	for _, p := range s.swaps {
		p.w.Commit()
		s.e.log.Info("model swapped", "pipeline", p.pipeline, "model", s.name, "version", s.version)
	}
}

// Abort releases the new version; the pipelines keep the one they run.
// Calls after the first, or after Commit, do nothing.
func (s *ModelSwap) Abort() {
	if s.done {
		return
	}
	s.done = true
	defer s.e.unlockApply()
	for _, p := range s.swaps {
		p.w.Abort()
	}
}
