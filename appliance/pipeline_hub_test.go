package appliance

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ledge/hub"
	"ledge/internal/testenv"
)

// TestDeployedPipelinePublishesThroughHub: a deployment (no containers)
// brings a pipeline and a route; the pipeline's detections go out on its
// hub output, the route sends them $upstream, and they arrive on a real
// mosquitto standing in for the cloud.
func TestDeployedPipelinePublishesThroughHub(t *testing.T) {
	upstream := startMosquitto(t)
	host, port, _ := net.SplitHostPort(upstream)
	images := t.TempDir()
	data, err := os.ReadFile(testenv.Media(t, "bus.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(images, "bus.jpg"), data, 0o644)
	testenv.ORTLib(t)

	cfg := testConfig(t)
	cfg.Hub.Upstream = hub.UpstreamConfig{Mode: "mqtt", URL: "tcp://" + upstream, TopicTemplate: "cloud/{deviceId}/{sourceModule}"}
	app, err := New(t.Context(), cfg, BuildInfo{Version: "test"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()
	defer func() { cancel(); <-done }()

	// Subscribed upstream before anything is published.
	sub := testenv.MosquittoSub(t, t.Context(), "-h", host, "-p", port, "-t", "cloud/"+cfg.DeviceID+"/door", "-C", "1", "-W", "60")

	manifest := fmt.Sprintf(`version: "1"
pipelines:
  - name: door
    source: {url: "images:%s", loop: true, realtime: true, fps: 5}
    detect: {model: %s, classes: [person], threshold: 0.5}
    tracker: {minFrames: 1}
    actions:
      - {type: hub, output: events, on: [object.enter]}
routes:
  doorToCloud: FROM /messages/modules/door/outputs/events INTO $upstream
`, images, testenv.Model(t, "yolox_nano.onnx"))
	if _, err := app.agent.Apply(t.Context(), []byte(manifest), nil); err != nil {
		t.Fatalf("apply: %v", err)
	}
	got, ok := sub.Next(60 * time.Second)
	if !ok {
		t.Fatalf("nothing arrived upstream within 60 s (pipelines %+v, hub %+v)", app.pipelines.Stats(), app.hub.Stats())
	}
	if !strings.Contains(got, `"object.enter"`) || !strings.Contains(got, `"person"`) {
		t.Errorf("upstream got %q", got)
	}
	// The plan of the same manifest now says the pipeline is unchanged.
	plan, err := app.agent.Check(t.Context(), []byte(manifest), nil)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range plan.Changes {
		if c.Kind == "pipeline" && c.Name == "door" {
			found = true
			if c.Action != "unchanged" {
				t.Errorf("pipeline door: %s, want unchanged", c.Action)
			}
		}
	}
	if !found {
		t.Errorf("plan lacks the pipeline: %+v", plan.Changes)
	}
}
