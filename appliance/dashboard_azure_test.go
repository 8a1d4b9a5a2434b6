package appliance

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"ledge/hub"
	"ledge/internal/testenv"
)

// TestDashboardPlanWarnings: an Azure manifest with keys edgeAgent
// ignores is accepted by Check on the Deployments page, which lists each
// ignored key with its path and a "did you mean", and says what $upstream
// is; the API's plan carries the same warnings.
func TestDashboardPlanWarnings(t *testing.T) {
	d := startDashboard(t, func(c *Config) { c.Agent.UpstreamRegistry = "parent.example" })
	ctx := testenv.Browser(t)
	login(t, ctx, d.base, testPassword)
	waitOverview(t, ctx)

	manifest := `{"modulesContent": {"$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "runtime": {"type": "docker", "settings": {"minDockerVersoin": "v1.25"}},
  "modules": {"sensor": {"type": "docker", "status": "running", "restartPolicy": "always",
    "ServiceClientConnectionString": "HostName=x",
    "settings": {"image": "$upstream:443/azureiotedge-simulated-temperature-sensor:1.5", "createOptions": "{\"HostConfg\":{},}"}}}}},
  "$edgeHub": {"properties.desired": {"schemaVersion": "1.2", "routes": {}, "mqttBroker": {"authorizations": []}}}}}`
	navigate(t, ctx, d.base+"/deployments")
	err := chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.ID("manifest")),
		chromedp.SetValue(chromedp.ID("manifest"), manifest),
		chromedp.Click(chromedp.ID("check")),
	)
	if err != nil {
		t.Fatal(err)
	}
	wait(t, ctx, "the plan's warnings", `document.querySelectorAll("#plan-warnings li").length >= 3`, 10*time.Second)
	text := evalString(t, ctx, `document.querySelector("#plan").textContent`)
	for _, want := range []string{
		`modules.sensor.ServiceClientConnectionString: unknown key, ignored as edgeAgent ignores it`,
		`runtime.settings.minDockerVersoin: unknown key, ignored as edgeAgent ignores it (did you mean "minDockerVersion"?)`,
		`settings.createOptions: HostConfg: not a field of Docker's ContainerCreate body`, `did you mean "HostConfig"?`,
		`parent.example:443/azureiotedge-simulated-temperature-sensor:1.5`, `$upstream is parent.example (agent.upstreamRegistry)`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the plan lacks %q:\n%s", want, text)
		}
	}
	// How ledge reads the standard parts is a note, apart from the warnings.
	notes := evalString(t, ctx, `document.querySelector("#plan-notes") ? document.querySelector("#plan-notes").textContent : ""`)
	warnings := evalString(t, ctx, `document.querySelector("#plan-warnings").textContent`)
	if !strings.Contains(notes, "$edgeHub mqttBroker is ignored") || strings.Contains(warnings, "mqttBroker") {
		t.Errorf("notes %q, warnings %q: want the mqttBroker note among the notes only", notes, warnings)
	}
	testenv.Screenshot(t, ctx, "deployments-warnings")
}

// TestDashboardUpstreamDown: an upstream broker that does not answer is
// shown with its reason on the Overview (and on the Hub page), not as a
// bare "connecting".
func TestDashboardUpstreamDown(t *testing.T) {
	addr := closedAddr(t)
	d := startDashboard(t, func(c *Config) {
		c.Hub.Upstream = hub.UpstreamConfig{Mode: "mqtt", URL: "tcp://" + addr, TopicTemplate: "ledge/{deviceId}/events"}
	})
	ctx := testenv.Browser(t)
	login(t, ctx, d.base, testPassword)
	waitOverview(t, ctx)
	wait(t, ctx, "the reason on the Overview", `/connecting/.test(document.querySelector("#sum-upstream").textContent) && /connection refused/.test(document.querySelector("#sum-queue").textContent)`, 30*time.Second)
	navigate(t, ctx, d.base+"/hub")
	wait(t, ctx, "the reason on the Hub page", `/connection refused/.test(document.querySelector("#upstream-detail").textContent)`, 30*time.Second)
	testenv.Screenshot(t, ctx, "hub-upstream-down")
}

// TestDashboardHubOffUpstreamDown: a fleet device runs with the hub off
// (docs/fleet.md); its link to the broker is still shown on the Overview
// with since when and why it is down, and every page loads without a
// console error (the hub's 503s were failed loads).
func TestDashboardHubOffUpstreamDown(t *testing.T) {
	addr := closedAddr(t)
	d := startDashboard(t, func(c *Config) {
		c.Hub.Enabled = false
		c.Hub.Upstream.Mode, c.Hub.Upstream.URL = "mqtt", "tcp://"+addr
	})
	ctx := testenv.Browser(t)
	console := watchConsole(t, ctx)
	login(t, ctx, d.base, testPassword)
	waitOverview(t, ctx)
	wait(t, ctx, "the reason on the Overview", `/connecting/.test(document.querySelector("#sum-upstream").textContent) && /connection refused/.test(document.querySelector("#sum-queue").textContent)`, 30*time.Second)
	for _, m := range console.take() {
		t.Errorf("overview: console: %s", m)
	}
	checkPages(t, ctx, d, console)
}

// closedAddr is a loopback address nothing listens on: connecting to it
// is refused.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
