package appliance

import (
	"context"
	"time"

	"ledge/web"
)

// eventSource is one component's event subscription, turned into web
// events for the dashboard's server-sent events.
type eventSource func(ctx context.Context, publish func(web.Event))

// forwardEvents runs every registered source until ctx ends; it is the
// "events" component.
func (a *App) forwardEvents(ctx context.Context) error {
	done := make(chan struct{})
	for _, src := range a.eventSources {
		go func() {
			defer func() { done <- struct{}{} }()
			src(ctx, a.events.Publish)
		}()
	}
	for range a.eventSources {
		<-done
	}
	return nil
}

// agentEvents forwards the agent's module, pull, deployment and rejection
// events as "module", "pull", "deployment" and "rejected".
func (a *App) agentEvents(ctx context.Context, publish func(web.Event)) {
	events, cancel := a.agent.Events(256)
	defer cancel()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			t := ev.Time
			if t.IsZero() {
				t = time.Now()
			}
			publish(web.Event{Type: ev.Kind, Time: t, Data: ev})
		}
	}
}
