package appliance

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"ledge/hub"
	"ledge/internal/testenv"
)

// TestAzureSDKEdgeHubSettings: what edgeHub does with $edgeHub's desired
// properties, seen by stock Azure IoT SDK clients. An Azure manifest's
// routes (the string form, and the object form with a priority and its
// own timeToLiveSecs) and storeAndForwardConfiguration.timeToLiveSecs:
// messages a device sends while the module they are routed to is away
// are dropped once older than the global TTL (counted as expired) and
// never delivered, those of the route with a longer TTL wait for it, and
// later ones arrive. The module is a ModuleClient.fromEnvironment with
// 3 s SAS tokens, signed by its workload socket each time the SDK renews
// them: its input keeps every message across the renewals.
func TestAzureSDKEdgeHubSettings(t *testing.T) {
	testenv.Docker(t)
	testenv.AzureSDK(t)
	app, cfg, image := startSDKApp(t)
	h := app.Hub()

	// The module's container is made (for its environment and socket)
	// and stays stopped: the SDK module runs on the host.
	manifest := fmt.Sprintf(`{"modulesContent": {
  "$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "runtime": {"type": "docker", "settings": {}}, "systemModules": {},
    "modules": {"sdkmod": {"version": "1", "type": "docker", "status": "stopped", "restartPolicy": "never", "imagePullPolicy": "never",
      "settings": {"image": %q}}}}},
  "$edgeHub": {"properties.desired": {"schemaVersion": "1.1",
    "routes": {
      "short": "FROM /messages WHERE kind = 'short' INTO BrokeredEndpoint(\"/modules/sdkmod/inputs/short\")",
      "long": {"route": "FROM /messages WHERE kind = 'long' INTO BrokeredEndpoint(\"/modules/sdkmod/inputs/long\")", "priority": 1, "timeToLiveSecs": 3600}},
    "storeAndForwardConfiguration": {"timeToLiveSecs": 2}}}
}}`, image)
	if _, err := app.agent.Apply(t.Context(), []byte(manifest), nil); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 60*time.Second, "the sdkmod container", func() bool {
		return app.agent.Reported().Modules["sdkmod"].ContainerID != ""
	})
	modEnv, _ := moduleHostEnv(t, cfg.Agent.ContainerPrefix+"sdkmod", h)

	thermo, err := h.AddIdentity(t.Context(), hub.IdentitySpec{Name: "thermo"})
	if err != nil {
		t.Fatal(err)
	}
	// The hub's name resolves in containers only.
	cs := regexp.MustCompile(`GatewayHostName=[^:;]*`).ReplaceAllString(thermo.ConnectionString, "GatewayHostName=localhost")
	d := testenv.StartSDK(t, "thermo", testenv.SDKEnv{Kind: "device", CS: cs, CA: h.CAPath()})
	d.Must("open", nil)
	send := func(kind, body string) {
		t.Helper()
		d.Must("send", map[string]any{"body": body, "props": map[string]string{"kind": kind}})
	}
	for i := range 3 {
		send("short", fmt.Sprint("old-", i))
	}
	send("long", "kept")
	waitUntil(t, 30*time.Second, "the 3 messages older than the TTL dropped", func() bool {
		return h.Stats().Drops["expired"] >= 3
	})

	// setOptions replaces the options fromEnvironment set, the trust
	// bundle as CA among them: it is given again (the same CA).
	m := testenv.StartSDK(t, "sdkmod", testenv.SDKEnv{Kind: "module", Env: modEnv, TokenTTL: 3, CA: h.CAPath()})
	m.Must("open", nil)
	if l := m.Wait("input", nil); l.Str("body") != "kept" || l.Str("input") != "long" {
		t.Errorf("first input: %v", l)
	}
	// Two token lifetimes of messages.
	var sent []string
	for i := 0; time.Duration(i)*300*time.Millisecond < 7*time.Second; i++ {
		sent = append(sent, fmt.Sprint("new-", i))
		send("short", sent[len(sent)-1])
		time.Sleep(300 * time.Millisecond)
	}
	last := sent[len(sent)-1]
	m.Wait("input", func(l testenv.SDKLine) bool { return l.Str("body") == last })
	var got []string
	for _, l := range m.All("input", nil) {
		got = append(got, l.Str("body"))
	}
	if want := append([]string{"kept"}, sent...); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("the module's inputs got\n%v\nwant\n%v", got, want)
	}
	if n := h.Stats().Drops["expired"]; n != 3 {
		t.Errorf("%d expired, want 3", n)
	}
	if ev := m.All("disconnect", nil); len(ev) > 0 {
		t.Errorf("the module was disconnected: %v", ev)
	}
}
