package appliance

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"ledge/internal/testenv"
	"ledge/web"
)

// consoleLog collects what a page writes to the browser console at level
// error (CSP violations, failed loads, exceptions included) and the CSP
// violations the page itself reports.
type consoleLog struct {
	mu   sync.Mutex
	msgs []string
}

func watchConsole(t *testing.T, ctx context.Context) *consoleLog {
	t.Helper()
	l := &consoleLog{}
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				if strings.Contains(m.String(), "net::ERR_NETWORK_CHANGED") {
					// Chromium cancels requests in flight when the host's
					// interfaces change: Docker networks that other
					// packages' tests make and remove meanwhile.
					continue
				}
				l.mu.Lock()
				l.msgs = append(l.msgs, fmt.Sprintf("%s (%s:%d)", m.String(), m.URL, m.Line))
				l.mu.Unlock()
			}
		}
	}()
	// A CSP violation also raises an event in the page: log it as an
	// error too, so it is caught even when the browser's own report is
	// not an error entry.
	_, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
		Source: `document.addEventListener("securitypolicyviolation", (e) =>
			console.error("CSP violation: " + e.violatedDirective + " blocked " + (e.blockedURI || "inline") + " at " + e.sourceFile + ":" + e.lineNumber + " " + (e.sample || "")));`,
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// take returns and forgets the messages so far.
func (l *consoleLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.msgs
	l.msgs = nil
	return m
}

// TestDashboardPagesClean opens every page of the dashboard, on a desktop
// (1280x900) and on a phone (390x844), with pipelines (one detecting, one
// whose camera is unreachable), events with and without a snapshot, an
// identity and a module that cannot start. Any console error or CSP
// violation fails the test, and so does a page that scrolls sideways on the
// phone. Every page is screenshotted at both sizes.
func TestDashboardPagesClean(t *testing.T) {
	video := panVideo(t, t.TempDir())
	model := testenv.Model(t, "yolox_nano.onnx")
	d := startDashboard(t, nil)
	api := pipelinesAPI{eng: d.app.pipelines, set: d.app.pipelineSet}
	specs := []string{
		// Snapshots of buses only: person events come without one.
		fmt.Sprintf(`name: door
source: {url: "file:%s", loop: true, realtime: true}
detect: {model: %s, threshold: 0.4, classes: [person, bus]}
tracker: {minFrames: 2, timeout: 300ms}
zones: [{name: kerb, polygon: [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]}]
actions: [{type: snapshot, classes: [bus]}]
`, video, model),
		"name: gate\nsource: {url: \"rtsp://127.0.0.1:1/unreachable-camera-with-a-long-path/stream1\"}\n",
		"name: yard\nsource: {url: \"testpattern:\", fps: 5, width: 320, height: 180}\n",
	}
	for _, s := range specs {
		if _, err := api.Put(t.Context(), "", []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	tok := apiToken(t, d)
	apiCall(t, d, tok, "POST", "/api/v1/hub/identities", `{"name": "warehouse-temperature-sensor-with-a-long-name", "kind": "device"}`, 201)
	apiCall(t, d, tok, "POST", "/api/v1/deployments", `{"manifest": "version: \"1\"\nmodules:\n  missing-image-module: {image: ledge-test/does-not-exist-anywhere:`+runID()+`, imagePullPolicy: never}\n"}`, 0)

	// Wait for events of both kinds (with and without a snapshot).
	deadline := time.Now().Add(60 * time.Second)
	for {
		body := apiCall(t, d, tok, "GET", "/api/v1/events?limit=200", "", 200)
		if strings.Contains(body, `"snapshot"`) && strings.Contains(body, `"person"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no events with and without snapshots within 60 s: %.500s", body)
		}
		time.Sleep(500 * time.Millisecond)
	}

	ctx := testenv.Browser(t)
	console := watchConsole(t, ctx)
	login(t, ctx, d.base, testPassword)
	waitOverview(t, ctx)
	for _, m := range console.take() {
		t.Errorf("login: console: %s", m)
	}

	checkPages(t, ctx, d, console)
	checkIssue15Defects(t, ctx, d)
}

// checkIssue15Defects checks what issue 15 found on the dashboard that
// neither the console nor sideways scrolling shows, on the phone
// checkPages leaves the browser as (pipelines door, gate and yard, events
// of door): a Live tile as wide as the screen (a <figure> kept its 40 px
// margins: 291 px on a 390 px phone) with its badge below the frame, not
// over the frame's own title; recent events and camera thumbnails on the
// Overview; the Pipelines page's Source row holding the source's URL (it
// held the state) and each pipeline's spec there to read.
func checkIssue15Defects(t *testing.T, ctx context.Context, d *dashboard) {
	t.Helper()
	navigate(t, ctx, d.base+"/live")
	wait(t, ctx, "the yard tile's frames", `(() => { const i = document.querySelector("#cams img[data-pipeline=yard]"); return i && !!i.dataset.seq && i.naturalWidth > 0; })()`, 20*time.Second)
	wait(t, ctx, "the yard tile's badge", `/fps/.test(document.querySelector("#cams figure[data-pipeline=yard] .cam-stats").textContent)`, 10*time.Second)
	tile := evalString(t, ctx, `(() => {
		const w = document.documentElement.clientWidth, f = document.querySelector("#cams figure[data-pipeline=yard]");
		const img = f.querySelector("img").getBoundingClientRect(), badge = f.querySelector(".cam-stats").getBoundingClientRect();
		const out = [];
		if (f.getBoundingClientRect().width < w - 40) out.push("the tile is " + Math.round(f.getBoundingClientRect().width) + " px wide on a " + w + " px screen");
		if (badge.top < img.bottom - 1 && badge.bottom > img.top + 1) out.push("the badge covers the frame (badge " + Math.round(badge.top) + "-" + Math.round(badge.bottom) + ", frame " + Math.round(img.top) + "-" + Math.round(img.bottom) + ")");
		return out.join("; ");
	})()`)
	if tile != "" {
		t.Errorf("Live on a phone: %s", tile)
	}

	navigate(t, ctx, d.base+"/")
	wait(t, ctx, "recent events on the Overview", `document.querySelectorAll("#recent li").length > 0 && /person|bus/.test(document.querySelector("#recent").textContent)`, 15*time.Second)
	wait(t, ctx, "camera thumbnails on the Overview", `document.querySelectorAll("#thumbs figure").length === 3`, 15*time.Second)

	navigate(t, ctx, d.base+"/pipelines")
	const gate = "rtsp://127.0.0.1:1/unreachable-camera-with-a-long-path/stream1"
	row := `(() => { const dl = document.querySelector("section[aria-label='pipeline gate'] dl"); const dt = dl && [...dl.querySelectorAll("dt")].find((d) => d.textContent === "Source"); return dt ? dt.nextElementSibling.textContent : ""; })()`
	wait(t, ctx, "gate's card", row+` !== ""`, 15*time.Second)
	if got := evalString(t, ctx, row); got != gate {
		t.Errorf("the Pipelines page's Source of gate is %q, want its URL %s", got, gate)
	}
	spec := evalString(t, ctx, `(() => { const p = document.querySelector("section[aria-label='pipeline gate'] details.spec-box pre"); return p ? p.textContent : ""; })()`)
	if !strings.Contains(spec, `"name": "gate"`) || !strings.Contains(spec, gate) {
		t.Errorf("the Pipelines page shows no spec of gate: %q", spec)
	}
}

// dashboardPages are the dashboard's pages checkPages opens.
var dashboardPages = []string{"/", "/live", "/events", "/pipelines", "/modules", "/devices", "/deployments", "/models", "/hub"}

// checkPages opens every page on a desktop and on a phone, screenshots it,
// and fails on console errors (watchConsole), visible defects (broken
// images, empty rows, leaked placeholders) and, on the phone, sideways
// scrolling.
func checkPages(t *testing.T, ctx context.Context, d *dashboard, console *consoleLog) {
	t.Helper()
	sizes := []struct {
		name   string
		w, h   int64
		mobile bool
	}{{"desktop", 1280, 900, false}, {"phone", 390, 844, true}}
	for _, sz := range sizes {
		opts := []chromedp.EmulateViewportOption{chromedp.EmulateScale(1)}
		if sz.mobile {
			opts = []chromedp.EmulateViewportOption{chromedp.EmulateScale(2), chromedp.EmulateMobile}
		}
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(sz.w, sz.h, opts...)); err != nil {
			t.Fatal(err)
		}
		for _, p := range dashboardPages {
			navigate(t, ctx, d.base+p)
			wait(t, ctx, p+" filled in", `document.readyState === "complete" && !document.body.textContent.includes("Loading…")`, 15*time.Second)
			time.Sleep(time.Second) // let polling and streams run
			name := strings.Trim(strings.ReplaceAll(p, "/", ""), " ")
			if name == "" {
				name = "overview"
			}
			testenv.Screenshot(t, ctx, "page-"+name+"-"+sz.name)
			for _, m := range console.take() {
				t.Errorf("%s on %s: console: %s", p, sz.name, m)
			}
			// What a person would see as a defect, whatever the console says.
			problems := evalString(t, ctx, `(() => {
				const out = [];
				for (const i of document.images) if (!i.hidden && i.complete && i.getAttribute("src") && i.naturalWidth === 0) out.push("a broken image " + i.getAttribute("src"));
				for (const td of document.querySelectorAll("td.empty")) {
					const cols = td.closest("table").querySelectorAll("thead th").length;
					if (td.colSpan !== cols) out.push("an empty-table row spans " + td.colSpan + " of " + cols + " columns");
				}
				const foot = document.querySelector(".foot").innerText.trim();
				if (/[·:]$/.test(foot)) out.push("the footer ends in '" + foot.slice(-1) + "'");
				const text = document.body.innerText;
				if (text.includes("`+"`"+`")) out.push("a literal backtick: " + text.slice(Math.max(0, text.indexOf("`+"`"+`") - 40), text.indexOf("`+"`"+`") + 40));
				// Sizes are counted in 1024s, as the CLI says them (KiB, MiB, GiB).
				const dec = text.match(/.{0,30}\d (KB|MB|GB|TB)\b.{0,10}/);
				if (dec) out.push("a binary size labelled with a decimal unit: " + dec[0]);
				if (/0001-01-01|undefined|NaN|\[object Object\]/.test(text)) out.push("a placeholder leaked: " + text.match(/.{0,40}(0001-01-01|undefined|NaN|\[object Object\]).{0,40}/)[0]);
				return out.join("; ");
			})()`)
			if problems != "" {
				t.Errorf("%s on %s: %s", p, sz.name, problems)
			}
			if sz.mobile {
				over := evalString(t, ctx, `(() => {
					const w = document.documentElement.clientWidth;
					if (document.documentElement.scrollWidth <= w) return "";
					const out = [];
					for (const e of document.querySelectorAll("body *")) {
						const r = e.getBoundingClientRect();
						// An element too wide, or text wider than its element.
						const wide = r.right > w + 1 || (getComputedStyle(e).overflowX === "visible" && r.left + e.scrollWidth > w + 1);
						if (wide && getComputedStyle(e).position !== "fixed") {
							let clipped = false;
							for (let a = e.parentElement; a && a !== document.body; a = a.parentElement) {
								if (getComputedStyle(a).overflowX !== "visible" && a.getBoundingClientRect().right <= w + 1) { clipped = true; break; }
							}
							if (!clipped) out.push(e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + (e.className ? "." + String(e.className).replace(/ /g, ".") : "") + " right=" + Math.round(Math.max(r.right, r.left + e.scrollWidth)));
						}
					}
					return "scrollWidth " + document.documentElement.scrollWidth + " > " + w + ": " + out.slice(0, 8).join(", ");
				})()`)
				if over != "" {
					t.Errorf("%s scrolls sideways on a phone: %s", p, over)
				}
			}
		}
	}
}

// TestDashboardPagesCleanFresh is TestDashboardPagesClean for what a new
// user meets first: nothing configured (no pipeline, no deployment, no
// model, no identity) and a Docker engine that does not answer, so health
// is failing. Empty states and a failing health are no console errors.
func TestDashboardPagesCleanFresh(t *testing.T) {
	d := startDashboard(t, func(c *Config) { c.Agent.DockerHost = "unix://" + t.TempDir() + "/no-docker.sock" })
	waitUntil(t, 10*time.Second, "health failing on the unreachable engine", func() bool {
		resp, err := http.Get(d.base + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	ctx := testenv.Browser(t)
	console := watchConsole(t, ctx)
	login(t, ctx, d.base, testPassword)
	waitOverview(t, ctx)
	for _, m := range console.take() {
		t.Errorf("login: console: %s", m)
	}
	checkPages(t, ctx, d, console)

	// No deployment: Azure's 417 in words, its code in brackets.
	navigate(t, ctx, d.base+"/deployments")
	wait(t, ctx, "the last status in words", `document.querySelector("#cur-code").textContent === "No deployment set yet (417)" && !document.body.textContent.includes("status code")`, 15*time.Second)
}

func apiToken(t *testing.T, d *dashboard) string {
	t.Helper()
	tok, err := web.CreateToken(t.Context(), d.app.DB(), "test-"+runID())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// apiCall calls the API with a token; want 0 accepts any 2xx.
func apiCall(t *testing.T, d *dashboard, tok, method, path, body string, want int) string {
	t.Helper()
	req, _ := http.NewRequest(method, d.base+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if want == 0 && resp.StatusCode/100 != 2 || want != 0 && resp.StatusCode != want {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return string(b)
}
