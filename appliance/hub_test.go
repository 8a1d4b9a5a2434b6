package appliance

import (
	"context"
	"fmt"
	"log/slog"
	"net"
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
	for _, want := range []string{"ledge_hub_clients_connected 0", `ledge_hub_dropped_total{reason="quota"} 0`, "ledge_hub_upstream_connected", "ledge_hub_connections_pending 0", "ledge_hub_connections_evicted_total 0"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// A connection that sends no CONNECT counts as pending until it goes.
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", app.Hub().Ports().MQTT))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(get(t, "http://"+app.webAddr()+"/metrics", http.StatusOK), "ledge_hub_connections_pending 1\n") {
		if time.Now().After(deadline) {
			t.Fatal("a connection without CONNECT is not counted in ledge_hub_connections_pending")
		}
		time.Sleep(20 * time.Millisecond)
	}
	conn.Close()
	for !strings.Contains(get(t, "http://"+app.webAddr()+"/metrics", http.StatusOK), "ledge_hub_connections_pending 0\n") {
		if time.Now().After(deadline) {
			t.Fatal("a closed pending connection is still counted")
		}
		time.Sleep(20 * time.Millisecond)
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
