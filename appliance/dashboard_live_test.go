package appliance

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"path/filepath"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"ledge/internal/testenv"
	"ledge/pipeline"
)

// TestDashboardLiveTenCameras: with ten cameras the Live page holds one
// connection for the whole grid (a WebSocket; no MJPEG stream), every tile
// gets frames and keeps getting them, leaving the page is instant, a tile
// clicked opens large while the grid behind it stops, and closing it brings
// the grid back.
func TestDashboardLiveTenCameras(t *testing.T) {
	d := startDashboard(t, nil)
	api := pipelinesAPI{eng: d.app.pipelines, set: d.app.pipelineSet}
	var names []string
	for i := range 10 {
		name := fmt.Sprintf("cam-%02d", i)
		names = append(names, name)
		if _, err := api.Put(t.Context(), "", []byte("name: "+name+"\nsource: {url: \"testpattern:\", fps: 8, width: 320, height: 180}\n")); err != nil {
			t.Fatal(err)
		}
	}
	ctx := testenv.Browser(t)
	var (
		mu      sync.Mutex
		sockets []string
		mjpeg   []string
	)
	if err := chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *network.EventWebSocketCreated:
			sockets = append(sockets, e.URL)
		case *network.EventRequestWillBeSent:
			if strings.Contains(e.Request.URL, "stream.mjpeg") {
				mjpeg = append(mjpeg, e.Request.URL)
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	console := watchConsole(t, ctx)
	login(t, ctx, d.base, testPassword)
	// The Overview's thumbnails have their own feed: counted from the
	// Live page on.
	wait(t, ctx, "the overview's thumbnails", `document.querySelectorAll("#thumbs img").length === 10`, 10*time.Second)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		n := len(sockets)
		if n > 0 {
			sockets, mjpeg = nil, nil
		}
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the Overview's thumbnails opened no WebSocket")
		}
	}
	navigate(t, ctx, d.base+"/live")
	wait(t, ctx, "ten tiles", `document.querySelectorAll("#cams figure").length === 10`, 15*time.Second)

	// Every tile shows frames, and they keep coming (each scrolled into view).
	seq := func(name string) string {
		return evalString(t, ctx, fmt.Sprintf(`document.querySelector("#cams img[data-pipeline='%s']").dataset.seq || ""`, name))
	}
	for _, name := range names {
		chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf(`document.querySelector("#cams figure[data-pipeline='%s']").scrollIntoView({block: "nearest"}), true`, name)))
		wait(t, ctx, name+"'s first frame", fmt.Sprintf(`(() => { const i = document.querySelector("#cams img[data-pipeline='%s']"); return !!i.dataset.seq && i.naturalWidth === 320; })()`, name), 20*time.Second)
		first := seq(name)
		wait(t, ctx, name+"'s next frame", fmt.Sprintf(`document.querySelector("#cams img[data-pipeline='%s']").dataset.seq !== %q`, name, first), 10*time.Second)
	}
	chromedp.Run(ctx, chromedp.Evaluate[bool](`window.scrollTo(0, 0), true`))
	testenv.Screenshot(t, ctx, "live-ten")
	mu.Lock()
	if len(sockets) != 1 || len(mjpeg) != 0 {
		t.Errorf("the Live page opened %d WebSockets (%v) and %d MJPEG streams; want one WebSocket for the whole grid", len(sockets), sockets, len(mjpeg))
	}
	mu.Unlock()

	// Leaving the page is instant: the next page loads and fills in.
	start := time.Now()
	navigate(t, ctx, d.base+"/pipelines")
	wait(t, ctx, "the Pipelines page", `document.querySelectorAll("#pipelines section.card dl dd").length > 0`, 20*time.Second)
	took := time.Since(start)
	t.Logf("from the Live page with ten cameras to a filled Pipelines page: %s", took)
	if took > 5*time.Second {
		t.Errorf("leaving the Live page took %s: something holds the browser's connections", took)
	}

	// Back on Live: one camera large, the grid behind it paused.
	navigate(t, ctx, d.base+"/live")
	wait(t, ctx, "ten tiles again", `document.querySelectorAll("#cams figure img[data-seq]").length >= 4`, 20*time.Second)
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#cams figure[data-pipeline='cam-03'] button.cam-frame`))); err != nil {
		t.Fatal(err)
	}
	wait(t, ctx, "the enlarged camera", `document.querySelector("#cam-dialog").open && document.querySelector("#cam-big").dataset.pipeline === "cam-03" && !!document.querySelector("#cam-big").dataset.seq`, 10*time.Second)
	waitUntil(t, 10*time.Second, "the grid to pause behind the enlarged camera", func() bool {
		for _, name := range names {
			st, _ := d.app.pipelines.PipelineStats(name)
			if want := map[bool]int{true: 1, false: 0}[name == "cam-03"]; st.Watchers != want {
				return false
			}
		}
		return true
	})
	first := evalString(t, ctx, `document.querySelector("#cam-big").dataset.seq`)
	wait(t, ctx, "the enlarged camera's next frame", fmt.Sprintf(`document.querySelector("#cam-big").dataset.seq !== %q`, first), 10*time.Second)
	if w := evalString(t, ctx, `String(Math.round(document.querySelector("#cam-big").getBoundingClientRect().width))`); len(w) < 4 && w < "800" {
		t.Errorf("the enlarged camera is %s px wide in a 1280 px window, want 800 or more", w)
	}
	testenv.Screenshot(t, ctx, "live-enlarged")
	if err := chromedp.Do(ctx, chromedp.KeyEvent("\x1b")); err != nil { // Escape closes it
		t.Fatal(err)
	}
	wait(t, ctx, "the dialog to close", `!document.querySelector("#cam-dialog").open`, 5*time.Second)
	waitUntil(t, 10*time.Second, "the grid to come back", func() bool {
		n := 0
		for _, name := range names {
			if st, _ := d.app.pipelines.PipelineStats(name); st.Watchers == 1 {
				n++
			}
		}
		return n >= 4 // the tiles in view
	})
	for _, m := range console.take() {
		t.Errorf("console: %s", m)
	}
}

// TestDashboardBadCamera: a pipeline whose RTSP camera cannot be reached
// says so on its Live tile ("camera offline" and the reason, not a black
// tile), and so does one of ledge.yaml that cannot be built ("pipeline
// failed" and why); both count as failing on the Overview, beside one that
// works.
func TestDashboardBadCamera(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "porch-model.onnx")
	d := startDashboard(t, func(c *Config) {
		c.Pipelines = []pipeline.Spec{{Name: "porch", Source: sourceSpec("testpattern:"), Detect: &pipeline.DetectSpec{Model: missing}}}
	})
	api := pipelinesAPI{eng: d.app.pipelines, set: d.app.pipelineSet}
	for _, spec := range []string{
		"name: gate\nsource: {url: \"rtsp://127.0.0.1:1/stream1\"}\n",
		"name: yard\nsource: {url: \"testpattern:\", fps: 5, width: 320, height: 180}\n",
	} {
		if _, err := api.Put(t.Context(), "", []byte(spec)); err != nil {
			t.Fatal(err)
		}
	}
	ctx := testenv.Browser(t)
	login(t, ctx, d.base, testPassword)
	wait(t, ctx, "two failing pipelines on the Overview", `(() => { const f = document.querySelector("#sum-failing"); return f && !f.hidden && /2 failing/.test(f.textContent) && /gate \(camera offline\)/.test(f.textContent) && /porch \(pipeline failed\)/.test(f.textContent); })()`, 30*time.Second)
	if got := evalString(t, ctx, `document.querySelector("#sum-pipelines").textContent`); got != "1 / 3 running" {
		t.Errorf("Overview pipelines: %q, want 1 / 3 running", got)
	}
	if got := evalString(t, ctx, `document.querySelector("#thumbs figure[data-pipeline=gate] .cam-offline").textContent`); got != "camera offline" {
		t.Errorf("Overview thumbnail of gate says %q", got)
	}
	testenv.Screenshot(t, ctx, "overview-bad-camera")

	navigate(t, ctx, d.base+"/live")
	wait(t, ctx, "the reason on the gate tile", `(() => { const o = document.querySelector("#cams figure[data-pipeline=gate] .cam-offline"); return o && !o.hidden && o.offsetHeight > 0 && /^camera offline: .*rtsp:\/\/127\.0\.0\.1:1\/stream1/.test(o.textContent); })()`, 30*time.Second)
	wait(t, ctx, "the reason on the porch tile", fmt.Sprintf(`(() => { const o = document.querySelector("#cams figure[data-pipeline=porch] .cam-offline"); return o && !o.hidden && o.textContent.startsWith("pipeline failed: ") && o.textContent.includes(%q); })()`, missing), 30*time.Second)
	wait(t, ctx, "the yard tile's frames", `(() => { const i = document.querySelector("#cams img[data-pipeline=yard]"); return !!i.dataset.seq && !i.hidden; })()`, 20*time.Second)
	if v := evalString(t, ctx, `String(document.querySelector("#cams figure[data-pipeline=yard] .cam-offline").hidden)`); v != "true" {
		t.Errorf("the working camera's tile shows an offline notice")
	}
	st, _ := d.app.pipelines.PipelineStats("gate")
	t.Logf("gate: %+v; the tile says %q", st.Source, evalString(t, ctx, `document.querySelector("#cams figure[data-pipeline=gate] .cam-offline").textContent`))
	testenv.Screenshot(t, ctx, "live-bad-camera")

	// Enlarged, the offline camera says why, and shows no frame rate or
	// latencies (zeros that measure nothing).
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#cams figure[data-pipeline=gate] button.cam-frame`))); err != nil {
		t.Fatal(err)
	}
	wait(t, ctx, "the enlarged gate with its reason", `document.querySelector("#cam-dialog").open && /^camera offline: /.test(document.querySelector("#cam-big-offline").textContent) && !document.querySelector("#cam-big-offline").hidden`, 10*time.Second)
	if stats := evalString(t, ctx, `document.querySelector("#cam-big-stats").textContent`); strings.Contains(stats, "fps") || strings.Contains(stats, "p50") {
		t.Errorf("the enlarged offline camera shows %q", stats)
	}
	testenv.Screenshot(t, ctx, "live-bad-camera-enlarged")

	// The Pipelines page says since when each fails, as ledge status does.
	if err := chromedp.Do(ctx, chromedp.KeyEvent("\x1b")); err != nil {
		t.Fatal(err)
	}
	navigate(t, ctx, d.base+"/pipelines")
	for _, name := range []string{"gate", "porch"} {
		wait(t, ctx, name+"'s card", fmt.Sprintf(`document.querySelector("section[aria-label='pipeline %s'] dl dd") !== null`, name), 15*time.Second)
		state := evalString(t, ctx, fmt.Sprintf(`(() => { const dl = document.querySelector("section[aria-label='pipeline %s'] dl"); const dt = [...dl.querySelectorAll("dt")].find((d) => d.textContent === "State"); return dt.nextElementSibling.textContent; })()`, name))
		if !regexp.MustCompile(`failing since .*\d{1,2}:\d\d:\d\d`).MatchString(state) {
			t.Errorf("the Pipelines page's state of %s is %q: since when it fails is missing", name, state)
		}
	}
}

// TestDashboardLiveOverHTTPS: over the HTTPS port the browser speaks
// HTTP/2 with ledge (pages, API calls and event streams share one
// connection) and the live feed comes over wss.
func TestDashboardLiveOverHTTPS(t *testing.T) {
	d := startDashboard(t, nil)
	api := pipelinesAPI{eng: d.app.pipelines, set: d.app.pipelineSet}
	if _, err := api.Put(t.Context(), "", []byte("name: yard\nsource: {url: \"testpattern:\", fps: 5, width: 320, height: 180}\n")); err != nil {
		t.Fatal(err)
	}
	base := "https://" + d.app.web.TLSAddr().String()
	ctx := testenv.Browser(t, chromedp.Flag("ignore-certificate-errors", true)) // the hub's CA is not the browser's
	login(t, ctx, base, testPassword)
	waitOverview(t, ctx)
	navigate(t, ctx, base+"/live")
	wait(t, ctx, "a frame over wss", `(() => { const i = document.querySelector("#cams img[data-pipeline=yard]"); return i && !!i.dataset.seq && i.naturalWidth === 320; })()`, 20*time.Second)
	protos := evalString(t, ctx, `[...new Set(performance.getEntries().filter((e) => e.nextHopProtocol).map((e) => e.nextHopProtocol))].join(",")`)
	if protos != "h2" {
		t.Errorf("the page's requests went over %q, want h2 only", protos)
	}
}

// TestDashboardActionFailing: a pipeline whose webhook's target is down
// runs (its frames flow) but its events do not get where they should: the
// Overview says so (the pipeline and the action), the Pipelines page says
// since when and why; when the target answers again, both clear.
func TestDashboardActionFailing(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "maintenance", http.StatusServiceUnavailable)
		}
	}))
	defer hook.Close()
	video := panVideo(t, t.TempDir())
	d := startDashboard(t, func(c *Config) {
		src := sourceSpec("file:" + video)
		src.Loop, src.Realtime = true, true
		c.Pipelines = []pipeline.Spec{{Name: "door", Source: src,
			Detect:  &pipeline.DetectSpec{Model: testenv.Model(t, "yolox_nano.onnx"), Threshold: 0.3, Classes: []string{"person"}, MaxFPS: 4},
			Actions: []pipeline.ActionSpec{{Type: "webhook", URL: hook.URL + "/hook", Retries: -1}}}}
	})
	ctx := testenv.Browser(t)
	login(t, ctx, d.base, testPassword)
	waitOverview(t, ctx)
	wait(t, ctx, "the failing action on the Overview", `(() => { const f = document.querySelector("#sum-failing"); return f && !f.hidden && /1 with a failing action: door \(webhook-0\)/.test(f.textContent); })()`, 60*time.Second)
	testenv.Screenshot(t, ctx, "overview-action-failing")
	navigate(t, ctx, d.base+"/live")
	wait(t, ctx, "the failing action on the Live tile", `(() => { const s = document.querySelector("figure[data-pipeline='door'] .cam-stats"); return s && s.textContent.startsWith("action webhook-0 failing") && s.classList.contains("bad"); })()`, 30*time.Second)
	navigate(t, ctx, d.base+"/pipelines")
	row := `(() => { const dl = document.querySelector("section[aria-label='pipeline door'] dl"); const dt = dl && [...dl.querySelectorAll("dt")].find((d) => d.textContent === "action webhook-0"); return dt ? dt.nextElementSibling.textContent : ""; })()`
	wait(t, ctx, "the failing action on the Pipelines page", row+`.startsWith("FAILING since ") && `+row+`.includes("503")`, 30*time.Second)
	if !strings.Contains(evalString(t, ctx, `document.querySelector("section[aria-label='pipeline door']").className`), "failing") {
		t.Errorf("the card of a pipeline with a failing action is not marked failing")
	}
	down.Store(false)
	wait(t, ctx, "the recovered action on the Pipelines page", `!`+row+`.startsWith("FAILING") && /[1-9]\d* delivered/.test(`+row+`)`, 60*time.Second)
	navigate(t, ctx, d.base+"/")
	waitOverview(t, ctx)
	wait(t, ctx, "the Overview without the failing action", `(() => { const f = document.querySelector("#sum-failing"); return f && f.hidden && /1 \/ 1 running/.test(document.querySelector("#sum-pipelines").textContent); })()`, 30*time.Second)
}
