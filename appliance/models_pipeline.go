package appliance

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"

	"ledge/inference"
	"ledge/internal/fault"
	"ledge/models"
	"ledge/pipeline"
)

// The model store and the pipeline engine meet here: pipelines resolve
// detect.model names through the store (storeResolver), and the store
// activates a version through the engine (modelActivator), which loads and
// warms it in every pipeline that runs the name and switches between two
// frames.

// storeResolver resolves pipelines' model names through the store. While a
// version is being activated it answers that candidate for its name, so
// that the engine's SwapModel (which resolves the name again) loads it
// before the store records it as active. Safe for concurrent use.
type storeResolver struct {
	s    *models.Store
	mu   sync.Mutex // guards cand
	cand map[string]models.Version
}

func (r *storeResolver) Resolve(name string) (pipeline.ResolvedModel, error) {
	r.mu.Lock()
	v, ok := r.cand[name]
	r.mu.Unlock()
	if !ok {
		var err error
		v, err = r.s.Resolve(name)
		switch {
		case errors.Is(err, models.ErrUnknown):
			return pipeline.ResolvedModel{}, fault.New(fault.NotFound, "%w %q: the model store has no model of that name (ledge models list)", pipeline.ErrUnknownModel, name)
		case errors.Is(err, models.ErrNotReady):
			return pipeline.ResolvedModel{}, &fault.Error{Kind: fault.Unavailable, Msg: err.Error(), Err: errors.Join(pipeline.ErrModelNotReady, err)}
		case err != nil:
			return pipeline.ResolvedModel{}, err
		}
	}
	return pipeline.ResolvedModel{Path: v.Path, Kind: v.Kind, Labels: v.Labels, Version: v.Version,
		InputWidth: v.InputWidth, InputHeight: v.InputHeight}, nil
}

func (r *storeResolver) setCandidate(v models.Version) {
	r.mu.Lock()
	r.cand[v.Name] = v
	r.mu.Unlock()
}

func (r *storeResolver) clearCandidate(name string) {
	r.mu.Lock()
	delete(r.cand, name)
	r.mu.Unlock()
}

// modelActivator is the store's models.Activator: the pipeline engine.
type modelActivator struct {
	eng *pipeline.Engine
	res *storeResolver
	inf InferenceConfig // TensorRTCache resolved (see New)
	log *slog.Logger
}

func newModelActivator(eng *pipeline.Engine, res *storeResolver, inf InferenceConfig, log *slog.Logger) *modelActivator {
	return &modelActivator{eng: eng, res: res, inf: inf, log: log}
}

// Activate loads and warms v in every pipeline that runs v.Name while the
// old version serves (or on its own, when none does), records it with
// commit, and lets the pipelines switch between two frames. On failure
// the pipelines keep (or go back to) the version the store says is
// active.
func (a *modelActivator) Activate(ctx context.Context, v models.Version, commit func() error) error {
	a.res.setCandidate(v)
	n, err := a.eng.SwapModel(ctx, v.Name)
	if err == nil && n == 0 {
		err = a.probe(v) // nothing runs the name: prove the version serves
	}
	if err == nil {
		err = commit()
	}
	a.res.clearCandidate(v.Name)
	if err != nil {
		// The file's path in the store says nothing to the operator.
		err = &fault.Error{Kind: fault.KindOf(err), Msg: strings.ReplaceAll(err.Error(), "model "+v.Path+": ", ""), Err: err}
	}
	if err != nil && n > 0 {
		// Some pipelines took the new version before the failure: back
		// to the one the store says is active.
		if _, rerr := a.eng.SwapModel(context.WithoutCancel(ctx), v.Name); rerr != nil {
			a.log.Error("model activation failed, and switching back failed too", "model", v.Name, "version", v.Version, "err", rerr)
		}
	}
	return err
}

// probe loads v in one ONNX Runtime session and runs it once on a blank
// frame, as a pipeline would.
func (a *modelActivator) probe(v models.Version) error {
	rt, err := inference.Open(a.inf.Library)
	if err != nil {
		return err
	}
	defer rt.Close()
	kind, err := inference.ParseKind(v.Kind)
	if err != nil {
		return err
	}
	det, err := rt.NewDetector(v.Path, inference.Options{Kind: kind, Labels: v.Labels, InputWidth: v.InputWidth,
		InputHeight: v.InputHeight, Sessions: 1, Threads: 1, Providers: a.inf.Providers, TensorRTCache: a.inf.TensorRTCache})
	if err != nil {
		return err
	}
	defer det.Close()
	if err := det.Warm(); err != nil {
		return fault.Wrap(fault.Invalid, err)
	}
	return nil
}
