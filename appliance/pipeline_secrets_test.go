package appliance

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"ledge/internal/testenv"
)

// TestStoredPipelineKeepsSecrets: a pipeline created through the API keeps
// its actions' headers and passwords (which the API never shows) across a
// restart: the webhook still gets its header, and the mqtt action runs
// with its password.
func TestStoredPipelineKeepsSecrets(t *testing.T) {
	images := t.TempDir()
	data, err := os.ReadFile(testenv.Media(t, "bus.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(images, "bus.jpg"), data, 0o644)
	testenv.ORTLib(t)
	keys := make(chan string, 100)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case keys <- r.Header.Get("X-Key"):
		default:
		}
	}))
	defer hook.Close()

	cfg := testConfig(t)
	spec := fmt.Sprintf(`{"name": "door",
		"source": {"url": "images:%s", "loop": true, "realtime": true, "fps": 5},
		"detect": {"model": %q, "classes": ["person"], "threshold": 0.5},
		"tracker": {"minFrames": 1},
		"actions": [
			{"type": "webhook", "url": %q, "on": ["object.enter"], "headers": {"X-Key": "headersecret"}},
			{"type": "mqtt", "url": "tcp://127.0.0.1:1", "on": ["zone.loiter"], "username": "cam", "password": "mqttsecret"}]}`,
		images, testenv.Model(t, "yolox_nano.onnx"), hook.URL+"/hook")
	hookKey := func(when string) {
		t.Helper()
		select {
		case k := <-keys:
			if k != "headersecret" {
				t.Errorf("%s: the webhook got X-Key %q, want the one the pipeline was created with", when, k)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("%s: no webhook call within 60 s", when)
		}
	}

	app, stop := startApp(t, cfg)
	api := pipelinesAPI{eng: app.pipelines, set: app.pipelineSet}
	if _, err := api.Put(t.Context(), "", []byte(spec)); err != nil {
		t.Fatal(err)
	}
	hookKey("created")
	stop()
	for len(keys) > 0 { // the first run's other calls
		<-keys
	}

	app, _ = startApp(t, cfg)
	hookKey("after a restart")
	for _, s := range app.pipelineSet.local {
		if s.Name == "door" {
			if got := s.Actions[1].Password; got != "mqttsecret" {
				t.Errorf("after a restart the mqtt action's password is %q", got)
			}
			return
		}
	}
	t.Error("the stored pipeline is not running after a restart")
}
