package appliance

import (
	"fmt"
	"testing"
	"time"

	"ledge/agent"
)

// TestPipelinePlanAgreesWithApply: a deployment's plan calls a pipeline
// unchanged exactly when the engine would leave it running: empty lists
// against none are unchanged, a new action password (which JSON never
// shows) is a recreate.
func TestPipelinePlanAgreesWithApply(t *testing.T) {
	app, _ := startApp(t, testConfig(t))
	manifest := func(action string) []byte {
		return fmt.Appendf(nil, `version: "1"
pipelines:
  - name: pattern
    source: {url: "testpattern:", fps: 10}
    actions:
      - %s
`, action)
	}
	first := manifest(`{type: mqtt, url: "tcp://127.0.0.1:1", username: cam, password: one}`)
	if _, err := app.agent.Apply(t.Context(), first, nil); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "pipeline pattern", func() bool { _, err := app.Pipelines().Spec("pattern"); return err == nil })
	for _, tc := range []struct {
		action string
		want   agent.Action
	}{
		{`{type: mqtt, url: "tcp://127.0.0.1:1", username: cam, password: one}`, agent.ActionUnchanged},
		{`{type: mqtt, url: "tcp://127.0.0.1:1", username: cam, password: one, on: [], zones: []}`, agent.ActionUnchanged},
		{`{type: mqtt, url: "tcp://127.0.0.1:1", username: cam, password: two}`, agent.ActionRecreate},
	} {
		plan, err := app.agent.Check(t.Context(), manifest(tc.action), nil)
		if err != nil {
			t.Fatal(err)
		}
		var got agent.Action
		for _, c := range plan.Changes {
			if c.Kind == "pipeline" && c.Name == "pattern" {
				got = c.Action
			}
		}
		if got != tc.want {
			t.Errorf("action %s: plan says %q, want %q", tc.action, got, tc.want)
		}
	}
}
