package appliance

import (
	"context"
	"errors"

	"ledge/internal/fault"
	"ledge/models"
	"ledge/pipeline"
)

// The model store and the pipeline engine meet here: pipelines resolve
// detect.model names through the store (storeResolver), and the store
// activates a version through the engine (modelActivator): the engine
// prepares it in every pipeline that runs the name, the store records it,
// the engine commits and the pipelines switch between two frames.

// storeResolver resolves pipelines' model names through the store. Safe
// for concurrent use.
type storeResolver struct{ s *models.Store }

func (r storeResolver) Resolve(name string) (pipeline.ResolvedModel, error) {
	v, err := r.s.Resolve(name)
	switch {
	case errors.Is(err, models.ErrUnknown):
		return pipeline.ResolvedModel{}, fault.New(fault.NotFound, "%w %q: the model store has no model of that name (ledge models list)", pipeline.ErrUnknownModel, name)
	case errors.Is(err, models.ErrNotReady):
		return pipeline.ResolvedModel{}, &fault.Error{Kind: fault.Unavailable, Msg: err.Error(), Err: errors.Join(pipeline.ErrModelNotReady, err)}
	case err != nil:
		return pipeline.ResolvedModel{}, err
	}
	return resolved(v), nil
}

// resolved is what the engine needs to know of a stored version.
func resolved(v models.Version) pipeline.ResolvedModel {
	return pipeline.ResolvedModel{Path: v.Path, Kind: v.Kind, Labels: v.Labels, Version: v.Version,
		InputWidth: v.InputWidth, InputHeight: v.InputHeight}
}

// modelActivator is the store's models.Activator: the pipeline engine.
type modelActivator struct{ eng *pipeline.Engine }

// Prepare loads and warms v in every pipeline that runs v.Name while the
// old version serves (or on its own, when none does); the store commits
// it once it has recorded v.
func (a modelActivator) Prepare(ctx context.Context, v models.Version) (models.Prepared, error) {
	sw, err := a.eng.PrepareModel(ctx, v.Name, resolved(v))
	if err != nil {
		return nil, err
	}
	return sw, nil
}
