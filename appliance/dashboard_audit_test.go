package appliance

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"ledge/hub"
	"ledge/internal/testenv"
)

// Found by the outside-in audit of the dashboard (issue 15): each test
// failed before its fix.

// TestDashboardHubChartWindow: the Hub page's "Messages per second (last
// 10 minutes)" chart spans ten minutes ending now. Its page collects the
// rates while it is open: a few seconds of them are drawn at the right
// edge, not stretched over the whole width as if they were ten minutes.
func TestDashboardHubChartWindow(t *testing.T) {
	d := startDashboard(t, nil)
	ctx := testenv.Browser(t)
	console := watchConsole(t, ctx)
	login(t, ctx, d.base, testPassword)
	waitOverview(t, ctx)
	navigate(t, ctx, d.base+"/hub")
	if title := evalString(t, ctx, `document.querySelector("#rate-title").textContent`); !strings.Contains(title, "last 10 minutes") {
		t.Fatalf("the chart's title is %q", title)
	}
	wait(t, ctx, "the hub page filled in", `document.querySelector("#clients").textContent !== "–"`, 15*time.Second)
	time.Sleep(5 * time.Second) // three polls: three points per series
	testenv.Screenshot(t, ctx, "hub-chart")
	// Coloured pixels (the series; the grid and labels are grey) in the
	// left half of the plot, above the legend.
	left := evalString(t, ctx, `(() => {
		const c = document.querySelector("#rate-chart"), dpr = window.devicePixelRatio || 1;
		const w = c.width, h = c.height, pad = 28 * dpr;
		const d = c.getContext("2d").getImageData(0, 0, w, h).data;
		let n = 0;
		for (let y = 0; y < h - 12 * dpr; y++) for (let x = Math.round(pad + 4 * dpr); x < Math.round(pad + (w - pad) / 2); x++) {
			const i = 4 * (y * w + x);
			if (d[i + 3] > 0 && Math.max(d[i], d[i + 1], d[i + 2]) - Math.min(d[i], d[i + 1], d[i + 2]) > 60) n++;
		}
		return String(n);
	})()`)
	if left != "0" {
		t.Errorf("seconds of rates cover the left half of a ten-minute chart (%s coloured pixels there)", left)
	}
	for _, m := range console.take() {
		t.Errorf("console: %s", m)
	}
}

// TestDashboardEventsInViewEmpties: with "in view now", objects leave the
// list as they end; when the last one goes, the list says "No events
// match." instead of going blank.
func TestDashboardEventsInViewEmpties(t *testing.T) {
	video := panVideo(t, t.TempDir())
	model := testenv.Model(t, "yolox_nano.onnx")
	d := startDashboard(t, nil)
	spec := fmt.Sprintf(`name: door
source: {url: "file:%s", loop: true, realtime: true}
detect: {model: %s, threshold: 0.4, classes: [person]}
tracker: {minFrames: 2, timeout: 300ms}
`, video, model)
	if _, err := (pipelinesAPI{eng: d.app.pipelines, set: d.app.pipelineSet}).Put(t.Context(), "", []byte(spec)); err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Browser(t)
	console := watchConsole(t, ctx)
	login(t, ctx, d.base, testPassword)
	waitOverview(t, ctx)
	navigate(t, ctx, d.base+"/events")
	wait(t, ctx, "the event stream to open", `document.querySelector("#conn").textContent === "live"`, 10*time.Second)
	evalString(t, ctx, `(() => { const f = document.querySelector("#filters"); f.active.checked = true; f.requestSubmit(); return ""; })()`)
	wait(t, ctx, "an object in view", `document.querySelectorAll("#events li[data-key]").length > 0`, 30*time.Second)
	// Stopping the pipeline ends every object it tracks.
	if err := d.app.pipelines.Stop(t.Context(), "door"); err != nil {
		t.Fatal(err)
	}
	wait(t, ctx, "the in-view list to empty", `document.querySelectorAll("#events li[data-key]").length === 0`, 15*time.Second)
	wait(t, ctx, `the emptied in-view list to say "No events match."`, `document.querySelector("#events").textContent === "No events match."`, 5*time.Second)
	for _, m := range console.take() {
		t.Errorf("console: %s", m)
	}
}

// TestDashboardModuleHubUnreachable: with the hub on loopback only (the
// example configs' choice for one machine), a module on the Docker
// network can never connect; the Modules page says why and which key
// changes it, instead of "never connected" with no reason.
func TestDashboardModuleHubUnreachable(t *testing.T) {
	id := runID()
	image := "ledge-test/mqttmod:" + id
	buildModuleImage(t, image)
	d := startDashboard(t, nil) // the hub on 127.0.0.1
	tok := apiToken(t, d)
	apiCall(t, d, tok, "POST", "/api/v1/deployments", fmt.Sprintf(`{"manifest": "version: \"1\"\nmodules:\n  talker: {image: %s, imagePullPolicy: never, createOptions: {Cmd: [receiver]}}\n"}`, image), 0)
	ctx := testenv.Browser(t)
	console := watchConsole(t, ctx)
	login(t, ctx, d.base, testPassword)
	waitOverview(t, ctx)
	navigate(t, ctx, d.base+"/modules")
	wait(t, ctx, "talker running", `[...document.querySelectorAll("#modules tbody tr")].some((r) => r.textContent.includes("talker") && r.textContent.includes("running"))`, 60*time.Second)
	cell := evalString(t, ctx, `[...document.querySelectorAll("#modules tbody tr")].find((r) => r.textContent.includes("talker")).cells[2].textContent`)
	if !strings.Contains(cell, "never connected") || !strings.Contains(cell, "127.0.0.1") || !strings.Contains(cell, "hub.listen.mqtts") {
		t.Errorf("the talker's hub cell says %q, want never connected, the loopback address and the key that moves it", cell)
	}
	testenv.Screenshot(t, ctx, "modules-hub-loopback")
	for _, m := range console.take() {
		t.Errorf("console: %s", m)
	}
}

// TestModulesCannotReachHubLogged: with the hub on loopback only and a
// module deployed, the log says why modules cannot connect and which key
// changes it (the dashboard and ledge status say it too); that it says so
// once, whatever the agent does next, is TestWarnOnceDeployed's.
func TestModulesCannotReachHubLogged(t *testing.T) {
	id := runID()
	image := "ledge-test/mqttmod:" + id
	buildModuleImage(t, image)
	cfg := testConfig(t)
	cfg.DeviceID = "gw-" + id
	cfg.Hub.Listen = hub.ListenConfig{MQTT: "127.0.0.1:0", MQTTS: "127.0.0.1:0"}
	cfg.Agent.Network = "ledge-test-" + id
	cfg.Agent.ContainerPrefix = "t" + id + "-"
	u := startAppliance(t, cfg)
	const warning = "container modules cannot reach the hub"
	if strings.Contains(u.logs.String(), warning) {
		t.Fatal("warned before any module was deployed")
	}
	manifest := fmt.Sprintf("version: \"1\"\nmodules:\n  talker: {image: %s, imagePullPolicy: never, createOptions: {Cmd: [receiver]}}\n", image)
	if _, err := u.app.agent.Apply(t.Context(), []byte(manifest), nil); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 60*time.Second, "the warning in the log", func() bool { return strings.Contains(u.logs.String(), warning) })
	logs := u.logs.String()
	if n := strings.Count(logs, warning); n != 1 {
		t.Errorf("the warning is logged %d times, want once", n)
	}
	if !strings.Contains(logs, "hub.listen.mqtts") || !strings.Contains(logs, "127.0.0.1") {
		t.Errorf("the warning does not name the address and the key:\n%s", logs)
	}
}

// TestDashboardOverviewFailingModules: the Overview's Modules card names
// the modules that fail and how (as the Pipelines card does for
// pipelines), not only "0 / 1 running", and a failed deployment says why
// (it said "deployment 1 (failed)").
func TestDashboardOverviewFailingModules(t *testing.T) {
	d := startDashboard(t, nil)
	tok := apiToken(t, d)
	apiCall(t, d, tok, "POST", "/api/v1/deployments", `{"manifest": "version: \"1\"\nmodules:\n  ghost: {image: ledge-test/does-not-exist:`+runID()+`, imagePullPolicy: never}\n"}`, 0)
	ctx := testenv.Browser(t)
	console := watchConsole(t, ctx)
	login(t, ctx, d.base, testPassword)
	waitOverview(t, ctx)
	wait(t, ctx, "the failing module on the Overview", `(() => { const f = document.querySelector("#sum-modules-failing"); return f && !f.hidden && /^1 failing: ghost \(failed\)/.test(f.textContent) && document.querySelector("#sum-modules").closest(".card").classList.contains("failing"); })()`, 60*time.Second)
	testenv.Screenshot(t, ctx, "overview-failing-module")
	// The failed deployment says why there too, not only "(failed)".
	rep := apiCall(t, d, tok, "GET", "/api/v1/deployments/current", "", 200)
	var cur struct {
		Deployment struct{ State, Reason string } `json:"deployment"`
	}
	json.Unmarshal([]byte(rep), &cur)
	if cur.Deployment.State != "failed" || cur.Deployment.Reason == "" {
		t.Fatalf("the deployment is %q (%q), want failed with a reason", cur.Deployment.State, cur.Deployment.Reason)
	}
	wait(t, ctx, "the deployment's reason on the Overview", fmt.Sprintf(`document.querySelector("#sum-deployment").textContent.includes(%q)`, "failed: "+cur.Deployment.Reason), 10*time.Second)
	for _, m := range console.take() {
		t.Errorf("console: %s", m)
	}
}
