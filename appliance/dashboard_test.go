package appliance

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"ledge/hub"
	"ledge/internal/testenv"
	"ledge/web"
)

// Browser tests of the dashboard against a whole appliance (hub, agent,
// real Docker), driving Debian's Chromium headless. Every page is
// screenshotted into test-artifacts/dashboard/.

const testPassword = "correct horse battery staple"

// dashboard is a running appliance with a known admin password.
type dashboard struct {
	app  *App
	cfg  Config
	base string
}

func startDashboard(t *testing.T, mutate func(*Config)) *dashboard {
	t.Helper()
	id := runID()
	cfg := testConfig(t)
	cfg.DeviceID = "gw-" + id
	cfg.Hub.Listen = hub.ListenConfig{MQTT: "127.0.0.1:0", MQTTS: "127.0.0.1:0"}
	cfg.Agent.Network = "ledge-test-" + id
	cfg.Agent.ContainerPrefix = "t" + id + "-"
	cfg.Agent.Rollback.StableFor = time.Second
	if mutate != nil {
		mutate(&cfg)
	}
	app, err := New(t.Context(), cfg, BuildInfo{Version: "test"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := web.SetAdminPassword(t.Context(), app.DB(), testPassword); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		app.Close()
		removeTestModules(cfg)
	})
	return &dashboard{app: app, cfg: cfg, base: "http://" + app.webAddr()}
}

// wait polls a JavaScript predicate in the page.
// A poll started while the page navigates fails; it is tried again until
// the deadline.
func wait(t *testing.T, ctx context.Context, what, js string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		// In slices of 2 s: Chromium's error page does not run the poll.
		_, err := chromedp.Run(ctx, chromedp.Poll[bool](js, chromedp.WithPollingTimeout(min(time.Until(deadline), 2*time.Second))))
		if err == nil {
			return
		}
		if networkChanged(t, ctx) {
			// Load the page again (a GET: the login form's POST has its
			// own retry).
			h, err := chromedp.Run(ctx, chromedp.NavigationEntries())
			if err != nil || int(h.CurrentIndex) >= len(h.Entries) {
				t.Fatalf("waiting for %s: the page failed (network changed) and its address is unknown: %v", what, err)
			}
			navigate(t, ctx, h.Entries[h.CurrentIndex].URL)
			continue
		}
		if time.Now().After(deadline) || !strings.Contains(err.Error(), "navigated") && !strings.Contains(err.Error(), "context") && !strings.Contains(err.Error(), "timeout") {
			where, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + " | " + (document.body ? document.body.innerText.slice(0, 300) : "")`))
			t.Fatalf("waiting for %s: %v (the page: %s)", what, err, where)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// networkChanged reports whether the page is Chromium's error page for a
// request it cancelled because the host's interfaces changed: tests of
// other packages make and remove Docker networks, and Chromium cancels
// what is in flight when an address comes or goes (net::ERR_NETWORK_CHANGED,
// seen failing TestDashboardLiveOverHTTPS's login in make test). Any other
// error page fails the test.
func networkChanged(t *testing.T, ctx context.Context) bool {
	t.Helper()
	if !errorPage(ctx) {
		return false
	}
	// The error page writes its text a moment after it is there.
	var page string
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(page, "ERR_") && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		page, _ = chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	}
	if !strings.Contains(page, "ERR_NETWORK_CHANGED") {
		t.Fatalf("Chromium shows an error page: %s", page)
	}
	t.Logf("Chromium cancelled a request because the host's network changed: loading it again")
	return true
}

// navigate loads url; a load Chromium cancelled because the host's
// network changed (see networkChanged) is made again.
func navigate(t *testing.T, ctx context.Context, url string) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		err := chromedp.Do(ctx, chromedp.Navigate(url))
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "ERR_NETWORK_CHANGED") || attempt == 8 {
			t.Fatalf("load %s: %v", url, err)
		}
		t.Logf("Chromium cancelled loading %s because the host's network changed: loading it again", url)
	}
}

// errorPage reports whether the page is Chromium's error page.
func errorPage(ctx context.Context) bool {
	p, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`location.protocol === "chrome-error:"`))
	return err == nil && p
}

// login submits the login form; a submission Chromium cancelled because
// the host's network changed is made again.
func login(t *testing.T, ctx context.Context, base, password string) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		navigate(t, ctx, base+"/login")
		err := chromedp.Do(ctx,
			chromedp.WaitVisible(chromedp.ID("password")),
			chromedp.SendKeys(chromedp.ID("password"), password),
			chromedp.Submit(chromedp.ID("password")),
		)
		if err != nil {
			t.Fatal(err)
		}
		// The answer: another page, the refusal, or an error page (which
		// does not run a poll: in slices of 2 s).
		for deadline := time.Now().Add(30 * time.Second); ; {
			_, err = chromedp.Run(ctx, chromedp.Poll[bool](`location.pathname !== "/login" || document.querySelector(".error") !== null`,
				chromedp.WithPollingTimeout(min(time.Until(deadline), 2*time.Second))))
			if err == nil || errorPage(ctx) {
				break
			}
			if time.Now().After(deadline) || !strings.Contains(err.Error(), "navigated") && !strings.Contains(err.Error(), "context") && !strings.Contains(err.Error(), "timeout") {
				t.Fatalf("waiting for the answer to the login: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !networkChanged(t, ctx) || attempt == 8 {
			return
		}
	}
}

// waitOverview waits for the Overview page a login lands on: its first
// load checks the password (a deliberately slow hash) and draws the page,
// which takes seconds on a 2-core machine busy with other packages'
// tests.
func waitOverview(t *testing.T, ctx context.Context) {
	t.Helper()
	wait(t, ctx, "the overview", `document.querySelector("#uptime") !== null`, 30*time.Second)
}

func evalString(t *testing.T, ctx context.Context, js string) string {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return v
}

// TestDashboardDeployFromBrowser: log in (a wrong password first), apply
// a manifest from the Deployments page, and watch the modules start on the
// Modules page; a state-changing request without the CSRF token is refused.
func TestDashboardDeployFromBrowser(t *testing.T) {
	id := runID()
	image := "ledge-test/mqttmod:" + id
	buildModuleImage(t, image)
	d := startDashboard(t, nil)
	ctx := testenv.Browser(t)

	login(t, ctx, d.base, "not the password")
	wait(t, ctx, "the refusal", `document.querySelector(".error") !== null`, 10*time.Second)
	if msg := evalString(t, ctx, `document.querySelector(".error").textContent`); !strings.Contains(msg, "wrong password") {
		t.Fatalf("wrong password page says %q", msg)
	}
	testenv.Screenshot(t, ctx, "login-refused")

	login(t, ctx, d.base, testPassword)
	wait(t, ctx, "the overview", `document.querySelector("#uptime") && document.querySelector("#uptime").textContent !== "…"`, 30*time.Second)
	testenv.Screenshot(t, ctx, "overview")

	// A POST without the CSRF token, from the logged-in page: refused.
	status := evalString(t, ctx, `(async () => String((await fetch("/api/v1/deployments/rollback", {method: "POST", credentials: "same-origin"})).status))()`)
	if status != "403" {
		t.Errorf("POST without CSRF token: %s, want 403", status)
	}

	manifest := fmt.Sprintf("version: \"1\"\nmodules:\n  talker: {image: %s, imagePullPolicy: never, createOptions: {Cmd: [receiver]}}\n", image)
	navigate(t, ctx, d.base+"/deployments")
	err := chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.ID("manifest")),
		chromedp.SetValue(chromedp.ID("manifest"), manifest),
		chromedp.Click(chromedp.ID("check")),
	)
	if err != nil {
		t.Fatal(err)
	}
	wait(t, ctx, "the plan", `document.querySelector("#plan table") !== null`, 10*time.Second)
	if plan := evalString(t, ctx, `document.querySelector("#plan").textContent`); !strings.Contains(plan, "talker") || !strings.Contains(plan, "create") {
		t.Errorf("plan shows %q", plan)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("apply"))); err != nil {
		t.Fatal(err)
	}
	wait(t, ctx, "the apply result", `document.querySelector("#apply-result").className === "result-ok"`, 10*time.Second)
	testenv.Screenshot(t, ctx, "deployments")

	navigate(t, ctx, d.base+"/modules")
	wait(t, ctx, "talker running on the Modules page",
		`[...document.querySelectorAll("#modules tbody tr")].some(r => r.textContent.includes("talker") && r.textContent.includes("running"))`, 60*time.Second)
	testenv.Screenshot(t, ctx, "modules")
	if r := d.app.agent.Reported(); r.Modules["talker"].RuntimeStatus != "running" {
		t.Errorf("agent reports talker %q", r.Modules["talker"].RuntimeStatus)
	}
	// A pass of the reconciler that finds it running describes it as
	// "running": the status column says it once, not "running running".
	if err := d.app.agent.Resync(t.Context()); err != nil {
		t.Fatal(err)
	}
	if r := d.app.agent.Reported(); r.Modules["talker"].StatusDescription != "running" {
		t.Fatalf("after a resync the agent describes talker as %q, want running (what this check is about)", r.Modules["talker"].StatusDescription)
	}
	wait(t, ctx, "the Modules page after the resync", `(() => { const r = [...document.querySelectorAll("#modules tbody tr")].find((r) => r.textContent.includes("talker")); return !!r && !r.cells[1].textContent.includes("started"); })()`, 15*time.Second)
	if st := evalString(t, ctx, `[...document.querySelectorAll("#modules tbody tr")].find((r) => r.textContent.includes("talker")).cells[1].textContent.trim()`); st != "running" {
		t.Errorf("talker's status cell says %q, want running", st)
	}

	for _, p := range []string{"devices", "hub"} {
		navigate(t, ctx, d.base+"/"+p)
		wait(t, ctx, p+" filled in", `document.querySelector("tbody") && !document.querySelector("tbody").textContent.includes("Loading")`, 10*time.Second)
		time.Sleep(300 * time.Millisecond)
		testenv.Screenshot(t, ctx, p)
	}
}

// panVideo makes the pan across bus.jpg of ../shared/media/README.md (5 s,
// 25 fps, 960x720 H.264) in dir.
func panVideo(t testing.TB, dir string) string {
	t.Helper()
	ffmpeg := testenv.Command(t, "ffmpeg", "ffmpeg")
	out := filepath.Join(dir, "bus_pan.mp4")
	cmd := exec.Command(ffmpeg, "-y", "-loglevel", "error", "-loop", "1", "-i", testenv.Media(t, "bus.jpg"),
		"-vf", "scale=1280:-2,crop=960:720:'mod(n*8,320)':0,format=yuv420p", "-t", "5", "-r", "25",
		"-c:v", "libx264", "-preset", "veryfast", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, b)
	}
	return out
}

// TestDashboardLiveAndEvents: the Live page shows frames of a pipeline
// running on a test video (the image has a size and its pixels change);
// a tracked object reaches the Events page through server-sent events
// within 2 s of its frame being captured, and its one item is updated in
// place until it ends; the Pipelines page draws its charts.
func TestDashboardLiveAndEvents(t *testing.T) {
	video := panVideo(t, t.TempDir())
	model := testenv.Model(t, "yolox_nano.onnx")
	d := startDashboard(t, nil)
	ctx := testenv.Browser(t)
	login(t, ctx, d.base, testPassword)
	waitOverview(t, ctx)

	// A pipeline from the API, as the Pipelines page would send it.
	spec := fmt.Sprintf(`name: door
source: {url: "file:%s", loop: true, realtime: true}
detect: {model: %s, threshold: 0.4, classes: [person]}
tracker: {minFrames: 2, timeout: 300ms}
actions: [{type: snapshot}]
`, video, model)
	if _, err := (pipelinesAPI{eng: d.app.pipelines, set: d.app.pipelineSet}).Put(t.Context(), "", []byte(spec)); err != nil {
		t.Fatal(err)
	}

	// Events page first, so the next detection arrives through SSE.
	navigate(t, ctx, d.base+"/events")
	wait(t, ctx, "the event stream to open", `document.querySelector("#conn").textContent === "live"`, 10*time.Second)
	_, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`
		window.arrivals = []; window.updated = [];
		new MutationObserver((ms) => { for (const m of ms) {
			const gone = new Set([...m.removedNodes].map((n) => n.dataset && n.dataset.key));
			for (const n of m.addedNodes) {
				if (n.dataset && gone.has(n.dataset.key)) window.updated.push(n.textContent);
				else if (n.dataset && n.dataset.captured) window.arrivals.push(Date.now() - Number(n.dataset.captured));
			}
		} }).observe(document.querySelector("#events"), {childList: true}); true`))
	if err != nil {
		t.Fatal(err)
	}
	wait(t, ctx, "a live detection on the Events page", `window.arrivals.length > 0`, 30*time.Second)
	lat := evalString(t, ctx, `String(Math.max(...window.arrivals))`)
	var ms int
	fmt.Sscan(lat, &ms)
	t.Logf("capture to Events page: %d ms (worst of %s events)", ms, evalString(t, ctx, `String(window.arrivals.length)`))
	if ms > 2000 {
		t.Errorf("a detection took %d ms from capture to the Events page, want <= 2000", ms)
	}
	wait(t, ctx, "a snapshot thumbnail", `[...document.querySelectorAll("#events img")].some(i => i.complete && i.naturalWidth > 0)`, 20*time.Second)
	// An object's event is one item, updated in place while it lasts and
	// when it ends (one per tracked object, not one per enter and leave).
	wait(t, ctx, "an object's event updated in place", `window.updated.some((t) => / – /.test(t))`, 30*time.Second)
	if n := evalString(t, ctx, `String(new Set([...document.querySelectorAll("#events li[data-key]")].map((li) => li.dataset.key)).size === document.querySelectorAll("#events li[data-key]").length)`); n != "true" {
		t.Error("an object's event is listed more than once")
	}
	testenv.Screenshot(t, ctx, "events")

	// A filter nothing matches says so, and keeps saying so while other
	// objects arrive (the notice went with the first event of any kind).
	_, err = chromedp.Run(ctx, chromedp.Evaluate[bool](`
		window.streamed = 0;
		for (const t of ["track.start", "track.update", "track.end"]) new EventSource("/api/v1/events/stream?types=" + t).addEventListener(t, () => window.streamed++);
		const f = document.querySelector("#filters"); f.class.value = "giraffe"; f.requestSubmit(); true`))
	if err != nil {
		t.Fatal(err)
	}
	wait(t, ctx, "the filtered list's notice", `document.querySelector("#events").textContent === "No events match."`, 10*time.Second)
	wait(t, ctx, "other objects streamed meanwhile", `window.streamed >= 3`, 30*time.Second)
	if got := evalString(t, ctx, `document.querySelector("#events").textContent`); got != "No events match." {
		t.Errorf("with a filter nothing matches, the list says %q after other objects arrived, want No events match.", got)
	}

	// Live: the stream's image has a size and changes.
	navigate(t, ctx, d.base+"/live")
	wait(t, ctx, "a live frame", `(() => { const i = document.querySelector("img[data-pipeline=door]"); return i && i.naturalWidth > 0; })()`, 20*time.Second)
	hash := `(() => { const i = document.querySelector("img[data-pipeline=door]"); const c = document.createElement("canvas");
		c.width = 96; c.height = 72; const g = c.getContext("2d"); g.drawImage(i, 0, 0, 96, 72);
		const d = g.getImageData(0, 0, 96, 72).data; let h = 0; for (let k = 0; k < d.length; k += 7) h = (h * 31 + d[k]) | 0; return String(h); })()`
	// The stream's image is between frames now and then (0x0 for a moment
	// when it reconnects under load): wait for a whole one.
	sizeOf := `(() => { const i = document.querySelector("img[data-pipeline=door]"); return i.naturalWidth + "x" + i.naturalHeight; })()`
	deadline := time.Now().Add(20 * time.Second)
	size := evalString(t, ctx, sizeOf)
	for size != "960x720" && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		size = evalString(t, ctx, sizeOf)
	}
	if size != "960x720" {
		t.Errorf("live frame %s, want 960x720", size)
	}
	first := evalString(t, ctx, hash)
	changed := false
	for range 40 {
		time.Sleep(100 * time.Millisecond)
		if evalString(t, ctx, hash) != first {
			changed = true
			break
		}
	}
	if !changed {
		t.Error("the live image did not change within 4 s")
	}
	wait(t, ctx, "the fps badge", `/fps/.test(document.querySelector(".cam-stats").textContent)`, 10*time.Second)
	testenv.Screenshot(t, ctx, "live")

	navigate(t, ctx, d.base+"/pipelines")
	wait(t, ctx, "the door card", `document.querySelector("section[aria-label='pipeline door'] dl dd") !== null`, 10*time.Second)
	time.Sleep(500 * time.Millisecond)
	testenv.Screenshot(t, ctx, "pipelines")

	// On a phone: the menu folds behind a button reachable by keyboard,
	// the live view fits the screen.
	err = chromedp.Do(ctx,
		chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile),
	)
	if err != nil {
		t.Fatal(err)
	}
	navigate(t, ctx, d.base+"/live")
	wait(t, ctx, "a live frame on a phone", `(() => { const i = document.querySelector("img[data-pipeline=door]"); return i && i.naturalWidth > 0; })()`, 20*time.Second)
	if w := evalString(t, ctx, `String(document.documentElement.scrollWidth <= window.innerWidth + 1)`); w != "true" {
		t.Errorf("the live page scrolls sideways on a phone (scrollWidth %s, width %s)",
			evalString(t, ctx, `String(document.documentElement.scrollWidth)`), evalString(t, ctx, `String(window.innerWidth)`))
	}
	if v := evalString(t, ctx, `getComputedStyle(document.querySelector("#nav")).display`); v != "none" {
		t.Errorf("phone: the menu is %q, want folded", v)
	}
	testenv.Screenshot(t, ctx, "live-phone")
	if err := chromedp.Do(ctx, chromedp.Focus(chromedp.CSS(".menu-toggle")), chromedp.KeyEvent("\r")); err != nil {
		t.Fatal(err)
	}
	wait(t, ctx, "the menu to open from the keyboard", `getComputedStyle(document.querySelector("#nav")).display !== "none"`, 5*time.Second)
	testenv.Screenshot(t, ctx, "menu-phone")
}

// TestDashboardModels: a model pulled through the API shows on the Models
// page with its state; a second version is activated from the page.
func TestDashboardModels(t *testing.T) {
	files := map[string][]byte{}
	for _, m := range []string{"yolox_nano.onnx", "fastestdet.onnx"} {
		data, err := os.ReadFile(testenv.Model(t, m))
		if err != nil {
			t.Fatal(err)
		}
		files["/"+m] = data
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, r.URL.Path, time.Time{}, bytes.NewReader(data))
	}))
	defer srv.Close()
	d := startDashboard(t, func(c *Config) { c.Models.AllowHTTP = true })
	tok, _ := web.CreateToken(t.Context(), d.app.DB(), "models")
	pull := func(version, file string, activate bool) {
		sum := sha256.Sum256(files["/"+file])
		body := fmt.Sprintf(`{"name": "people", "version": %q, "url": %q, "sha256": %q}`, version, srv.URL+"/"+file, hex.EncodeToString(sum[:]))
		req, _ := http.NewRequest("POST", d.base+"/api/v1/models"+map[bool]string{true: "?activate=true"}[activate], strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			t.Fatalf("pull %s: %d %s", version, resp.StatusCode, b)
		}
	}
	pull("1", "yolox_nano.onnx", true)
	pull("2", "fastestdet.onnx", false)

	ctx := testenv.Browser(t)
	login(t, ctx, d.base, testPassword)
	waitOverview(t, ctx)
	navigate(t, ctx, d.base+"/models")
	wait(t, ctx, "people active at version 1 with version 2 ready",
		`(() => { const s = document.querySelector("section[aria-label='model people']"); return s && /active 1/.test(s.textContent) && [...s.querySelectorAll("button")].some(b => b.textContent === "Activate"); })()`, 30*time.Second)
	testenv.Screenshot(t, ctx, "models")
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.JSPath(`[...document.querySelectorAll("section[aria-label='model people'] button")].filter(b => b.textContent === "Activate")`))); err != nil {
		t.Fatal(err)
	}
	wait(t, ctx, "version 2 active", `/active 2/.test(document.querySelector("section[aria-label='model people']").textContent)`, 30*time.Second)

	// A model a deployment brings says why it is active, as ledge models
	// list does ("asked for by the deployment").
	sum := sha256.Sum256(files["/fastestdet.onnx"])
	if _, err := d.app.agent.Apply(t.Context(), fmt.Appendf(nil, `version: "m1"
models:
  - {name: cars, version: "1", url: %q, sha256: %s, kind: fastestdet}
`, srv.URL+"/fastestdet.onnx", hex.EncodeToString(sum[:])), nil); err != nil {
		t.Fatal(err)
	}
	wait(t, ctx, "cars active, asked for by the deployment",
		`(() => { const s = document.querySelector("section[aria-label='model cars'] h2"); return s && /active 1, asked for by the deployment/.test(s.textContent); })()`, 30*time.Second)
	// Roll back is offered where there is a version to go back to: people
	// (1 was active before 2), not cars (only ever 1).
	hasRollBack := func(name string) string {
		return evalString(t, ctx, `String([...document.querySelectorAll("section[aria-label='model `+name+`'] button")].some(b => b.textContent === "Roll back"))`)
	}
	if p, c := hasRollBack("people"), hasRollBack("cars"); p != "true" || c != "false" {
		t.Errorf("Roll back offered for people: %s (want true), for cars: %s (want false: nothing to go back to)", p, c)
	}
}
