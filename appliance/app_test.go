package appliance

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"ledge/hub"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ledge/internal/migrate"
	"ledge/web"
)

func testConfig(t *testing.T) Config {
	cfg := Default()
	cfg.DataDir = t.TempDir()
	cfg.DeviceID = "test-" + runID() // agents of parallel tests own different containers
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.HTTP.ListenTLS = "127.0.0.1:0"
	cfg.Hub.Listen = hub.ListenConfig{MQTT: "127.0.0.1:0", MQTTS: "127.0.0.1:0"}
	return cfg
}

func TestAppRunAndStop(t *testing.T) {
	cfg := testConfig(t)
	app, err := New(t.Context(), cfg, BuildInfo{Version: "test"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()

	addr := app.webAddr()
	body := get(t, "http://"+addr+"/healthz", http.StatusOK)
	var h struct {
		Status     string
		Components []struct{ Name, Status string }
	}
	if err := json.Unmarshal([]byte(body), &h); err != nil || h.Status != "ok" || len(h.Components) == 0 {
		t.Errorf("healthz: %s (%v)", body, err)
	}
	get(t, "http://"+addr+"/metrics", http.StatusUnauthorized) // secure by default
	tok, err := web.CreateToken(t.Context(), app.DB(), "prometheus")
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "http://"+addr+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("metrics with a token: %d %s", resp.StatusCode, mb)
	}
	metrics := string(mb)
	for _, want := range []string{`ledge_build_info{commit="",version="test"} 1`, "go_goroutines", "process_resident_memory_bytes"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// The CLI's unix socket answers too.
	sock := filepath.Join(cfg.DataDir, "ledge.sock")
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	resp, err = c.Get("http://ledge/healthz")
	if err != nil {
		t.Fatalf("unix socket: %v", err)
	}
	resp.Body.Close()

	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(6 * time.Second):
		t.Fatal("Run did not return within 6 s of cancel")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stop took %s, want under 5 s", d)
	}
	v, err := migrate.Version(t.Context(), app.DB(), "appliance")
	if err != nil || v != len(migrations) {
		t.Errorf("appliance schema version %d, %v; want %d", v, err, len(migrations))
	}
}

func TestNewFailsOnBusyPort(t *testing.T) {
	cfg := testConfig(t)
	first, err := New(t.Context(), cfg, BuildInfo{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	cfg2 := testConfig(t)
	cfg2.HTTP.Listen = first.webAddr()
	if _, err := New(t.Context(), cfg2, BuildInfo{}, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "http.listen: "+cfg2.HTTP.Listen+" is in use") ||
		!strings.Contains(err.Error(), "set http.listen in ledge.yaml") {
		t.Fatalf("second appliance on a busy port: %v, want an error naming http.listen", err)
	}
	// The same for the hub's MQTT port.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg3 := testConfig(t)
	cfg3.Hub.Listen.MQTT = busy.Addr().String()
	if _, err := New(t.Context(), cfg3, BuildInfo{}, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "set hub.listen.mqtt in ledge.yaml") {
		t.Fatalf("busy MQTT port: %v, want an error naming hub.listen.mqtt", err)
	}
}

func get(t *testing.T, url string, wantStatus int) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		t.Fatalf("GET %s: %d %s, want %d", url, resp.StatusCode, b, wantStatus)
	}
	return string(b)
}

// TestHTTPSWithHubCA: the dashboard's HTTPS port serves a certificate that
// the hub's generated CA verifies, speaks HTTP/2 (so a page's requests and
// streams share one connection), and a login over HTTPS sets a Secure
// cookie.
func TestHTTPSWithHubCA(t *testing.T) {
	cfg := testConfig(t)
	app, err := New(t.Context(), cfg, BuildInfo{Version: "test"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()
	defer func() { cancel(); <-done }()
	if err := web.SetAdminPassword(t.Context(), app.DB(), "a long enough password"); err != nil {
		t.Fatal(err)
	}

	caPEM, err := os.ReadFile(filepath.Join(cfg.DataDir, "hub", "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.pem holds no certificate")
	}
	_, port, _ := net.SplitHostPort(app.web.TLSAddr().String())
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	base := "https://localhost:" + port
	resp, err := c.Get(base + "/healthz")
	if err != nil {
		t.Fatalf("https with the hub CA: %v", err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Errorf("https answered over %s, want HTTP/2", resp.Proto)
	}
	resp, err = c.Post(base+"/api/v1/auth/login", "application/json", strings.NewReader(`{"password":"a long enough password"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ck := resp.Header.Get("Set-Cookie"); resp.StatusCode != 200 || !strings.Contains(ck, "Secure") || !strings.Contains(ck, "HttpOnly") {
		t.Errorf("login over https: %d, Set-Cookie %q", resp.StatusCode, ck)
	}
}
