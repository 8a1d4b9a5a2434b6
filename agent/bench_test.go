package agent

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"ledge/agent/manifest"
)

const benchModules = 10

func benchManifest(version string) string {
	var mods []string
	for i := range benchModules {
		mods = append(mods, fmt.Sprintf("m%02d %s always %d", i, imgApp, i))
	}
	return manifestYAML(version, mods...)
}

// waitRunning waits for every module of the bench manifest to be
// reported running, through the event stream (no polling delay).
func waitRunning(b *testing.B, events <-chan Event, n int) {
	b.Helper()
	running := map[string]bool{}
	deadline := time.After(2 * time.Minute)
	for len(running) < n {
		select {
		case e := <-events:
			if e.Kind == EventModule && e.RuntimeStatus == StatusRunning {
				running[e.Module] = true
			}
		case <-deadline:
			b.Fatalf("only %d of %d modules running", len(running), n)
		}
	}
}

// BenchmarkReconcileCreate times a 10-module deployment with the images
// present, from Apply to every module reported running (create + start,
// in startup order), against the same ten ContainerCreate +
// ContainerStart calls made directly on the engine, interleaved in the
// same run. agent/raw is ledge's cost over the bare Docker calls (goal
// <= 1.2).
func BenchmarkReconcileCreate(b *testing.B) {
	ta := newTestAgent(b)
	cli := docker(b)
	ctx := context.Background()
	events, cancel := ta.Events(4096)
	defer cancel()

	// The raw baseline creates the very containers ledge would, under
	// another instance label and prefix.
	m, err := manifest.Parse([]byte(benchManifest("0")))
	if err != nil {
		b.Fatal(err)
	}
	rawInstance := ta.instance + "-raw"
	b.Cleanup(func() { removeInstances(context.Background(), cli, rawInstance) })
	gw, err := (&engine{cli: cli}).ensureNetwork(ctx, testNet)
	if err != nil {
		b.Fatal(err)
	}
	var specs []*containerSpec
	for i := range m.Modules {
		s, err := buildSpec(&m.Modules[i], injection{instance: rawInstance, prefix: ta.prefix + "raw-", deviceID: "d",
			network: testNet, gateway: gw, logging: DefaultConfig().ModuleLogging})
		if err != nil {
			b.Fatal(err)
		}
		specs = append(specs, s)
	}

	var agentTime, rawTime time.Duration
	n := 0
	for b.Loop() {
		n++
		// ledge: apply, wait until all ten run.
		b.StopTimer()
		ta.apply(manifestYAML(fmt.Sprintf("%d.0", n)))
		ta.waitState(fmt.Sprintf("%d.0", n), StateConverged, time.Minute)
		for len(events) > 0 {
			<-events
		}
		b.StartTimer()
		start := time.Now()
		ta.apply(benchManifest(fmt.Sprintf("%d.1", n)))
		waitRunning(b, events, benchModules)
		agentTime += time.Since(start)

		// Raw: the same creates and starts, in the same order.
		start = time.Now()
		for _, s := range specs {
			resp, err := cli.ContainerCreate(ctx, s.Config, s.Host, s.Net, nil, s.Name)
			if err != nil {
				b.Fatal(err)
			}
			if err := cli.ContainerStart(ctx, resp.ID, container.StartOptions{}); err != nil {
				b.Fatal(err)
			}
		}
		rawTime += time.Since(start)
		b.StopTimer()
		removeInstances(ctx, cli, rawInstance)
		b.StartTimer()
	}
	b.ReportMetric(float64(agentTime.Milliseconds())/float64(n), "agent-ms/deploy")
	b.ReportMetric(float64(rawTime.Milliseconds())/float64(n), "raw-ms/deploy")
	b.ReportMetric(float64(agentTime)/float64(rawTime), "agent/raw")
}

// BenchmarkReconcileNoop times a reconcile pass with ten modules running
// and right (the agent lists and inspects, changes nothing), against the
// bare ContainerList and ContainerInspect calls it cannot do without, and
// reports the latency of applying a deployment that changes nothing, from
// Apply to converged. Goal: under 100 ms.
func BenchmarkReconcileNoop(b *testing.B) {
	ta := newTestAgent(b)
	cli := docker(b)
	ctx := context.Background()
	ta.apply(benchManifest("1"))
	ta.waitState("1", StateConverged, 2*time.Minute)
	before := ta.containers()

	var passTime, rawTime, applyTime time.Duration
	n := 0
	for b.Loop() {
		n++
		start := time.Now()
		if err := ta.Resync(ctx); err != nil {
			b.Fatal(err)
		}
		passTime += time.Since(start)

		start = time.Now()
		if _, err := (&engine{cli: cli, instance: ta.instance}).list(ctx); err != nil {
			b.Fatal(err)
		}
		rawTime += time.Since(start)

		start = time.Now()
		v := fmt.Sprintf("1.%d", n)
		ta.apply(benchManifest(v))
		ta.waitStateFast(v, StateConverged)
		applyTime += time.Since(start)
	}
	b.StopTimer()
	after := ta.containers()
	for name, c := range before {
		if after[name].ID != c.ID || !after[name].StartedAt.Equal(c.StartedAt) {
			b.Errorf("no-op reconcile touched %s", name)
		}
	}
	b.ReportMetric(float64(passTime.Microseconds())/float64(n)/1000, "pass-ms")
	b.ReportMetric(float64(rawTime.Microseconds())/float64(n)/1000, "list+inspect-ms")
	b.ReportMetric(float64(passTime)/float64(rawTime), "pass/raw")
	b.ReportMetric(float64(applyTime.Microseconds())/float64(n)/1000, "noop-apply-ms")
}

// waitStateFast is waitState with a tight poll, for timing.
func (ta *testAgent) waitStateFast(version, state string) {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if d := ta.Reported().Deployment; d != nil && d.Version == version && d.State == state {
			return
		}
		time.Sleep(200 * time.Microsecond)
	}
	ta.t.Fatalf("deployment %s not %s: %s", version, state, strings.TrimSpace(moduleSummary(ta.Reported())))
}
