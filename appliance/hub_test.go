package appliance

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// TestHubJoinsRun: the hub runs in the appliance, /healthz lists it and
// /metrics carries its counters.
func TestHubJoinsRun(t *testing.T) {
	cfg := testConfig(t)
	cfg.Dev = true
	app, err := New(t.Context(), cfg, BuildInfo{Version: "test"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	if app.Hub() == nil || app.Hub().Ports().MQTT == 0 {
		t.Fatal("no hub in the appliance")
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("appliance did not stop")
		}
	}()
	body := get(t, "http://"+app.webAddr()+"/healthz", http.StatusOK)
	if !strings.Contains(body, `"name":"hub","status":"ok"`) {
		t.Errorf("healthz: %s", body)
	}
	metrics := get(t, "http://"+app.webAddr()+"/metrics", http.StatusOK)
	for _, want := range []string{"ledge_hub_clients_connected 0", `ledge_hub_dropped_total{reason="quota"} 0`, "ledge_hub_upstream_connected"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// The example config parses, hub section included; a bad hub key is an
// error naming it.
func TestHubConfig(t *testing.T) {
	data, err := os.ReadFile("../deploy/examples/ledge.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig("ledge.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Hub.Upstream.Mode != "mqtt" || cfg.Hub.Routes["toCloud"].Route == "" || cfg.Hub.StoreAndForward.QuotaBytes != 268435456 {
		t.Errorf("hub config %+v", cfg.Hub)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"hub:\n  listn: {}\n", "listn"},
		{"hub:\n  upstream:\n    mode: carrier-pigeon\n", "hub.upstream.mode"},
		{"hub:\n  acl:\n    - kinds: [robot]\n", "hub.acl[0].kinds"},
		{"hub:\n  methodTimeout: 1ms\n", "hub.methodTimeout"},
	} {
		if _, err := ParseConfig("x.yaml", []byte(tc.yaml)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error naming %s", tc.yaml, err, tc.want)
		}
	}
}
