package appliance

import (
	"context"
	"encoding/json"
	"slices"
	"strings"

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

// pipelinesSection owns a deployment's pipelines: they run beside those
// of ledge.yaml and of the dashboard, and may not redefine them.
type pipelinesSection struct{ set *pipelineSet }

func parseDeployed(raw json.RawMessage) ([]pipeline.Spec, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	dep, err := pipeline.ParseSpecs("pipelines", raw)
	if err != nil {
		return nil, fault.Wrap(fault.Invalid, err)
	}
	return dep, nil
}

func (s pipelinesSection) Validate(_ context.Context, raw json.RawMessage) error {
	dep, err := parseDeployed(raw)
	if err != nil {
		return err
	}
	_, err = s.set.withDeployed(dep)
	return err
}

func (s pipelinesSection) Plan(_ context.Context, raw json.RawMessage) ([]agent.Change, error) {
	dep, err := parseDeployed(raw)
	if err != nil {
		return nil, err
	}
	want, err := s.set.withDeployed(dep)
	if err != nil {
		return nil, err
	}
	cur := map[string]pipeline.Spec{}
	for _, sp := range s.set.eng.Specs() {
		cur[sp.Name] = sp
	}
	var out []agent.Change
	for _, sp := range want {
		c := agent.Change{Kind: "pipeline", Name: sp.Name, Action: agent.ActionCreate}
		if old, ok := cur[sp.Name]; ok {
			c.Action = agent.ActionUnchanged
			if !old.Equal(sp) { // as the engine's Apply decides
				c.Action = agent.ActionRecreate
			}
			delete(cur, sp.Name)
		}
		out = append(out, c)
	}
	for name := range cur {
		out = append(out, agent.Change{Kind: "pipeline", Name: name, Action: agent.ActionRemove})
	}
	slices.SortFunc(out, func(a, b agent.Change) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func (s pipelinesSection) Apply(ctx context.Context, raw json.RawMessage) error {
	dep, err := parseDeployed(raw)
	if err != nil {
		return err
	}
	return s.set.setDeployed(ctx, dep)
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
