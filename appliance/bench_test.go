package appliance

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"ledge/internal/testenv"
	"ledge/web"
)

// BenchmarkDashboardUnderLoad: 50 concurrent clients load the Overview page
// and GET /api/v1/pipelines (three pipelines running) for a few seconds;
// it reports the server time of each (from the Server-Timing header)
// at p50 and p99, and the client-side latency (goal: server time under
// 20 ms).
func BenchmarkDashboardUnderLoad(b *testing.B) {
	d := startBenchAppliance(b)
	for i := range 3 {
		spec := fmt.Sprintf(`{"name": "p%d", "source": {"url": "testpattern:", "fps": 10, "width": 320, "height": 240}}`, i)
		if _, err := d.pipelines.Put(b.Context(), "", []byte(spec)); err != nil {
			b.Fatal(err)
		}
	}
	tok, err := web.CreateToken(b.Context(), d.app.DB(), "bench")
	if err != nil {
		b.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	for b.Loop() {
		for _, path := range []string{"/", "/api/v1/pipelines"} {
			server, clientLat := load(b, client, d.base+path, tok, 50, 3*time.Second)
			name := strings.Trim(strings.ReplaceAll(path, "/", "_"), "_")
			if name == "" {
				name = "overview"
			}
			b.ReportMetric(pct(server, 50), name+"-server-p50-ms")
			b.ReportMetric(pct(server, 99), name+"-server-p99-ms")
			b.ReportMetric(pct(clientLat, 99), name+"-client-p99-ms")
			b.ReportMetric(float64(len(server))/3, name+"-req/s")
		}
	}
}

// load runs n clients on url for d and returns server and client times in
// milliseconds.
func load(b *testing.B, client *http.Client, url, tok string, n int, d time.Duration) (server, clientLat []float64) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for range n {
		wg.Go(func() {
			for time.Now().Before(end) {
				req, _ := http.NewRequest("GET", url, nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				c := float64(time.Since(t0).Microseconds()) / 1000
				if resp.StatusCode != 200 {
					b.Errorf("%s: %d", url, resp.StatusCode)
					return
				}
				st := resp.Header.Get("Server-Timing")
				v, _ := strconv.ParseFloat(strings.TrimPrefix(st, "app;dur="), 64)
				mu.Lock()
				server = append(server, v)
				clientLat = append(clientLat, c)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return server, clientLat
}

func pct(v []float64, p int) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

// benchAppliance is an appliance for benchmarks.
type benchAppliance struct {
	app       *App
	base      string
	pipelines pipelinesAPI
}

func startBenchAppliance(b *testing.B) *benchAppliance {
	cfg := Default()
	cfg.DataDir = b.TempDir()
	cfg.DeviceID = "bench-" + runID()
	cfg.HTTP.Listen, cfg.HTTP.ListenTLS = "127.0.0.1:0", ""
	cfg.Hub.Listen.MQTT, cfg.Hub.Listen.MQTTS = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Agent.Enabled = false
	app, err := New(b.Context(), cfg, BuildInfo{Version: "bench"}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done; app.Close() })
	return &benchAppliance{app: app, base: "http://" + app.webAddr(), pipelines: pipelinesAPI{eng: app.pipelines, set: app.pipelineSet}}
}

// BenchmarkMJPEGViewerCost runs one pipeline on a video (read as fast as it
// goes, YOLOX-nano) twice in each round, without and with a viewer on
// stream.mjpeg, and reports processed fps both ways and their ratio (goal:
// with/without >= 0.95), plus the JPEG encodes done without a viewer
// (must be 0).
func BenchmarkMJPEGViewerCost(b *testing.B) {
	video := panVideo(b, b.TempDir())
	d := startBenchAppliance(b)
	tok, _ := web.CreateToken(b.Context(), d.app.DB(), "bench")
	spec := fmt.Sprintf(`{"name": "v", "source": {"url": "file:%s", "loop": true}, "detect": {"model": %q}}`, video, testenv.Model(b, "yolox_nano.onnx"))
	if _, err := d.pipelines.Put(b.Context(), "", []byte(spec)); err != nil {
		b.Fatal(err)
	}
	fps := func(dur time.Duration) float64 {
		s0, _ := d.app.pipelines.PipelineStats("v")
		time.Sleep(dur)
		s1, _ := d.app.pipelines.PipelineStats("v")
		return float64(s1.FramesOut-s0.FramesOut) / dur.Seconds()
	}
	time.Sleep(2 * time.Second) // warm up
	var without, with []float64
	var encodesWithout uint64
	for b.Loop() {
		s0, _ := d.app.pipelines.PipelineStats("v")
		without = append(without, fps(4*time.Second))
		s1, _ := d.app.pipelines.PipelineStats("v")
		encodesWithout += s1.Encodes - s0.Encodes

		req, _ := http.NewRequest("GET", d.base+"/api/v1/pipelines/v/stream.mjpeg", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		ctx, cancel := context.WithCancel(b.Context())
		resp, err := http.DefaultClient.Do(req.WithContext(ctx))
		if err != nil {
			b.Fatal(err)
		}
		go io.Copy(io.Discard, resp.Body)
		time.Sleep(500 * time.Millisecond)
		with = append(with, fps(4*time.Second))
		cancel()
		resp.Body.Close()
		time.Sleep(500 * time.Millisecond)
	}
	w, wo := mean(with), mean(without)
	b.ReportMetric(wo, "fps-no-viewer")
	b.ReportMetric(w, "fps-one-viewer")
	b.ReportMetric(w/wo, "viewer/no-viewer")
	b.ReportMetric(float64(encodesWithout), "encodes-without-viewer")
}

func mean(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(max(len(v), 1))
}
