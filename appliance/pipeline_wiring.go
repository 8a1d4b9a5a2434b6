package appliance

import (
	"context"
	"encoding/json"
	"slices"

	"ledge/agent"
	"ledge/internal/fault"
	"ledge/pipeline"
	"ledge/web"
)

// hubPublisher gives pipelines the in-process hub to publish into (the
// `hub` action, and `mqtt` without a URL); nil without the hub.
func (a *App) hubPublisher() pipeline.Publisher {
	if a.hub == nil {
		return nil
	}
	return a.hub
}

// pipelinesSection owns a deployment's pipelines. What runs is the
// pipelines of ledge.yaml plus the deployment's; a deployment may not
// redefine a pipeline of ledge.yaml.
type pipelinesSection struct {
	eng  *pipeline.Engine
	base []pipeline.Spec
}

func (s pipelinesSection) specs(raw json.RawMessage) ([]pipeline.Spec, error) {
	all := slices.Clone(s.base)
	if len(raw) == 0 || string(raw) == "null" {
		return all, nil
	}
	dep, err := pipeline.ParseSpecs("pipelines", raw)
	if err != nil {
		return nil, fault.Wrap(fault.Invalid, err)
	}
	for _, d := range dep {
		for _, b := range s.base {
			if b.Name == d.Name {
				return nil, fault.New(fault.Invalid, "pipeline %q is defined in ledge.yaml; a deployment cannot replace it", d.Name)
			}
		}
	}
	all = append(all, dep...)
	if err := pipeline.ValidateSpecs(all, "pipelines"); err != nil {
		return nil, fault.Wrap(fault.Invalid, err)
	}
	return all, nil
}

func (s pipelinesSection) Validate(_ context.Context, raw json.RawMessage) error {
	_, err := s.specs(raw)
	return err
}

func (s pipelinesSection) Plan(_ context.Context, raw json.RawMessage) ([]agent.Change, error) {
	want, err := s.specs(raw)
	if err != nil {
		return nil, err
	}
	cur := map[string]string{}
	for _, sp := range s.eng.Specs() {
		cur[sp.Name] = specKey(sp)
	}
	var out []agent.Change
	for _, sp := range want {
		c := agent.Change{Kind: "pipeline", Name: sp.Name, Action: agent.ActionCreate}
		if old, ok := cur[sp.Name]; ok {
			c.Action = agent.ActionUnchanged
			if old != specKey(sp) {
				c.Action = agent.ActionRecreate
			}
			delete(cur, sp.Name)
		}
		out = append(out, c)
	}
	for name := range cur {
		out = append(out, agent.Change{Kind: "pipeline", Name: name, Action: agent.ActionRemove})
	}
	slices.SortFunc(out, func(a, b agent.Change) int { return cmpString(a.Name, b.Name) })
	return out, nil
}

func (s pipelinesSection) Apply(ctx context.Context, raw json.RawMessage) error {
	want, err := s.specs(raw)
	if err != nil {
		return err
	}
	return s.eng.Apply(ctx, want)
}

func specKey(s pipeline.Spec) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// pipelineEvents forwards pipeline events to the dashboard: detections and
// zone/track events under their own type (object.enter, zone.enter, ...),
// source state changes as "source.state".
func (a *App) pipelineEvents(ctx context.Context, publish func(web.Event)) {
	sub := a.pipelines.Subscribe(256)
	defer sub.Cancel()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-sub.C:
			if !ok {
				return
			}
			publish(web.Event{Type: ev.Type, Time: ev.Time, Data: ev})
		}
	}
}
