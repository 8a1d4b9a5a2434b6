package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"
)

// TestPullWithCredentials: an image on a registry that wants a password
// is pulled with the manifest's registry credentials, with progress in
// bytes and percent; a wrong password fails the module at once; an image
// that is present locally runs even when its registry is unreachable.
func TestPullWithCredentials(t *testing.T) {
	reg := localRegistry(t)
	cli := docker(t)
	cli.ImageRemove(t.Context(), reg.image, image.RemoveOptions{Force: true})
	ta := newTestAgent(t)
	events, cancel := ta.Events(1024)
	defer cancel()

	creds := func(password string) string {
		return "registryCredentials:\n  lab: {address: " + reg.addr + ", username: " + reg.user + ", password: " + password + "}\n"
	}
	onCreate := func(doc string) string {
		return strings.ReplaceAll(doc, "imagePullPolicy: never", "imagePullPolicy: on-create")
	}

	ta.apply(onCreate(manifestYAML("1", "pulled "+reg.image+" always 0")) + creds(reg.password))
	ta.waitState("1", StateConverged, 60*time.Second)
	var sawBytes, sawDone bool
	for len(events) > 0 {
		e := <-events
		if e.Kind == EventPull && e.Pull.Image == reg.image {
			sawBytes = sawBytes || (e.Pull.Current > 0 && e.Pull.Total > 0 && e.Pull.Percent > 0)
			sawDone = sawDone || (e.Pull.Status == "done" && e.Pull.Percent == 100)
		}
	}
	if !sawBytes || !sawDone {
		t.Errorf("pull progress: bytes seen %v, done seen %v", sawBytes, sawDone)
	}
	if c := ta.containers()["pulled"]; !c.Running || c.Image != reg.image {
		t.Errorf("pulled module: %+v", c)
	}

	// A wrong password: the new module fails at once, and the deployment
	// is rolled back.
	cli.ImageRemove(t.Context(), reg.image, image.RemoveOptions{Force: true})
	ta.apply(onCreate(manifestYAML("2", "pulled "+reg.image+" always 0", "denied "+reg.image+" always 0")) + creds("wrong"))
	rep := ta.waitState("1", StateConverged, 30*time.Second)
	if rb := rep.Deployment.RolledBackFrom; rb == nil || rb.Version != "2" || !strings.Contains(rb.Reason, "authentication required") {
		t.Errorf("rolledBackFrom = %+v", rb)
	}

	// Present locally, registry unreachable: it runs anyway ("always"
	// tries to pull, fails, and uses the local image).
	offline := "127.0.0.1:1/ledge-test/app:" + testRun
	if err := cli.ImageTag(t.Context(), imgApp, offline); err != nil {
		t.Fatal(err)
	}
	doc := strings.ReplaceAll(manifestYAML("3", "offline "+offline+" always 0"), "imagePullPolicy: never", "imagePullPolicy: always")
	ta.apply(doc)
	ta.waitState("3", StateConverged, 60*time.Second)
	if c := ta.containers()["offline"]; !c.Running {
		t.Errorf("module with a local image and an unreachable registry is not running: %+v", c)
	}
}

func TestMutableTag(t *testing.T) {
	for ref, want := range map[string]bool{
		"app":                                   true,
		"app:latest":                            true,
		"app:1.2":                               false,
		"reg.io:5000/a/b:latest":                true,
		"reg.io:5000/a/b:2":                     false,
		"app@sha256:" + strings.Repeat("a", 64): false,
	} {
		if got := mutableTag(ref); got != want {
			t.Errorf("mutableTag(%q) = %v, want %v", ref, got, want)
		}
	}
}
