package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"

	"ledge/internal/fault"
)

// azureModule is an Azure manifest with one module (a JSON fragment).
func azureModule(module string) []byte {
	return []byte(`{"modulesContent": {"$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "runtime": {"type": "docker"},
  "modules": {` + module + `}}}, "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {}}},
  "$ledge": {"properties.desired": {"version": "1"}}}}`)
}

// TestLenientValuesMeetThePolicy: createOptions read as edgeAgent reads
// them feed the privilege policy with what Docker would get: a string
// "true", a 1 or a lower-case key is privileged, refused unless
// agent.allowElevatedPermissions.
func TestLenientValuesMeetThePolicy(t *testing.T) {
	for _, co := range []string{
		`{\"HostConfig\":{\"Privileged\":\"true\"}}`,
		`{\"HostConfig\":{\"Privileged\":1}}`,
		`{\"hostconfig\":{\"privileged\":\" TRUE \",}}`,
		`{'HostConfig':{Privileged:'True'}} // Json.NET reads this`,
	} {
		doc := azureModule(`"cam": {"settings": {"image": "cam:1", "createOptions": "` + co + `"}}`)
		_, err := PlanOffline(doc, nil, Config{}, t.TempDir(), "")
		if !fault.Is(err, fault.Forbidden) {
			t.Errorf("%s: got %v, want Forbidden", co, err)
			continue
		}
		if !strings.Contains(err.Error(), "HostConfig.Privileged") || !strings.Contains(err.Error(), keyAllowElevated) {
			t.Errorf("%s: %v", co, err)
		}
		p, err := PlanOffline(doc, nil, Config{AllowElevatedPermissions: true}, t.TempDir(), "")
		if err != nil {
			t.Fatalf("%s: allowed: %v", co, err)
		}
		if len(p.Elevated) != 1 || p.Elevated[0].Setting != "HostConfig.Privileged" {
			t.Errorf("%s: elevated %v", co, p.Elevated)
		}
	}
}

// TestUpstreamImage: deploy check says what $upstream resolved to, warns
// without a parent, and apply refuses it naming $upstream.
func TestUpstreamImage(t *testing.T) {
	doc := azureModule(`"sensor": {"settings": {"image": "$upstream:443/azureiotedge-simulated-temperature-sensor:1.5"}}`)
	p, err := PlanOffline(doc, nil, Config{}, t.TempDir(), "parent.local")
	if err != nil {
		t.Fatal(err)
	}
	if d := p.Changes[0].Detail; !strings.Contains(d, "parent.local:443/azureiotedge-simulated-temperature-sensor:1.5") ||
		!strings.Contains(d, "$upstream is parent.local (the host of hub.upstream)") {
		t.Errorf("detail %q", d)
	}
	p, err = PlanOffline(doc, nil, Config{UpstreamRegistry: "10.0.0.2:5000"}, t.TempDir(), "parent.local")
	if err != nil {
		t.Fatal(err)
	}
	if d := p.Changes[0].Detail; !strings.Contains(d, "10.0.0.2:5000/azureiotedge") || !strings.Contains(d, "agent.upstreamRegistry") {
		t.Errorf("detail %q", d)
	}
	p, err = PlanOffline(doc, nil, Config{}, t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	if w := strings.Join(p.Warnings, "\n"); !strings.Contains(w, "modules.sensor: $upstream is the parent's registry") || !strings.Contains(w, "apply refuses it") {
		t.Errorf("warnings %q", w)
	}
	bad := DefaultConfig()
	bad.UpstreamRegistry = "https://x/y"
	if bad.Validate() == nil {
		t.Error("a URL is accepted as agent.upstreamRegistry")
	}
}

// TestUpstreamPullsThroughParent: a module whose image says
// $upstream:<port>/... is pulled from the parent's registry, with the
// registry credentials written for $upstream too; without a parent,
// apply refuses the manifest naming $upstream and changes nothing.
func TestUpstreamPullsThroughParent(t *testing.T) {
	reg := localRegistry(t)
	cli := docker(t)
	cli.ImageRemove(t.Context(), reg.image, image.RemoveOptions{Force: true})
	host, port, _ := strings.Cut(reg.addr, ":")
	written := "$upstream:" + port + strings.TrimPrefix(reg.image, reg.addr)
	doc := `{"modulesContent": {"$edgeAgent": {"properties.desired": {"schemaVersion": "1.1",
  "runtime": {"type": "docker", "settings": {"registryCredentials": {"parent": {"address": "$upstream:` + port + `", "username": "` + reg.user + `", "password": "` + reg.password + `"}}}},
  "modules": {"sensor": {"type": "docker", "status": "running", "restartPolicy": "always", "settings": {"image": "` + written + `"}}}}},
  "$ledge": {"properties.desired": {"version": "1"}}}}`

	orphan := newTestAgent(t)
	_, err := orphan.Apply(t.Context(), []byte(doc), nil)
	if err == nil || !strings.Contains(err.Error(), "modules.sensor, registryCredentials.parent: $upstream is the parent's registry") || !strings.Contains(err.Error(), "hub.upstream") {
		t.Fatalf("apply without a parent: %v", err)
	}
	if rep := orphan.Reported(); rep.Deployment != nil {
		t.Fatalf("a refused manifest became current: %+v", rep.Deployment)
	}

	ta := newTestAgent(t, func(o *Options) { o.ParentHost = host })
	res := ta.apply(doc)
	if d := res.Plan.Changes[0].Detail; !strings.Contains(d, "$upstream is "+host) {
		t.Errorf("plan detail %q", d)
	}
	ta.waitState("1", StateConverged, 90*time.Second)
	if c := ta.containers()["sensor"]; !c.Running || c.Image != reg.image {
		t.Errorf("sensor: %+v, want image %s running", c, reg.image)
	}
}
