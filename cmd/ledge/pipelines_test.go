package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestPipelinesCommand: `ledge pipelines` lists, adds, shows, stops,
// starts, replaces and removes pipelines of a running ledge; a pipeline
// from ledge.yaml is changed there, and a bad spec is refused naming the
// field, both leaving what runs alone.
func TestPipelinesCommand(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "ledge.yaml")
	os.WriteFile(cfg, []byte(`dataDir: data
http: {listenTLS: 127.0.0.1:0}
hub: {listen: {mqtt: 127.0.0.1:0, mqtts: 127.0.0.1:0}}
pipelines:
  - name: pattern
    source: {url: "testpattern:", fps: 5, width: 160, height: 120}
`), 0o644)
	d := &runningLedge{addr: freePort(t), stderr: &syncBuffer{}, done: make(chan error, 1)}
	launch(t, d, "", nil, "run", "--config", cfg)
	run := func(wantCode int, args ...string) string {
		t.Helper()
		out, errOut, code := ledge(t, append(args, "--config", cfg)...)
		if code != wantCode {
			t.Fatalf("ledge %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, wantCode, out, errOut)
		}
		return out + errOut
	}
	// waitState polls `pipelines list` until NAME shows in state.
	waitState := func(name, state string) string {
		t.Helper()
		re := regexp.MustCompile(`(?m)^` + name + ` +\S+ +` + state + ` `)
		deadline := time.Now().Add(20 * time.Second)
		for {
			out := run(0, "pipelines", "list")
			if re.MatchString(out) {
				return out
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never %s:\n%s", name, state, out)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	out := waitState("pattern", `running +\d+\.\d/\d+\.\d`) // and its frame rates measured
	if !regexp.MustCompile(`(?m)^PIPELINE +OWNER +STATE`).MatchString(out) || !regexp.MustCompile(`(?m)^pattern +config +running +\d+\.\d/\d+\.\d`).MatchString(out) {
		t.Errorf("list:\n%s", out)
	}

	spec := filepath.Join(dir, "door.yaml")
	os.WriteFile(spec, []byte("name: door\nsource: {url: \"testpattern:\", fps: 2, width: 160, height: 120}\n"), 0o644)
	if out := run(0, "pipelines", "add", spec); !strings.Contains(out, "pipeline door:") {
		t.Errorf("add: %s", out)
	}
	waitState("door", "running")
	show := run(0, "pipelines", "show", "door")
	for _, want := range []string{"door (owner: api)", "state", "frames", `"url": "testpattern:"`} {
		if !strings.Contains(show, want) {
			t.Errorf("show lacks %q:\n%s", want, show)
		}
	}
	// The same name again is refused; the first stays.
	if out := run(1, "pipelines", "add", spec); !strings.Contains(out, "door") {
		t.Errorf("adding door twice: %s", out)
	}

	run(0, "pipelines", "stop", "door")
	waitState("door", "stopped")
	run(0, "pipelines", "start", "door")
	waitState("door", "running")

	os.WriteFile(spec, []byte("name: door\nsource: {url: \"testpattern:\", fps: 3, width: 160, height: 120}\n"), 0o644)
	run(0, "pipelines", "replace", "door", spec)
	if show := run(0, "pipelines", "show", "door", "--json"); !strings.Contains(show, `"fps": 3`) {
		t.Errorf("replace did not change the spec:\n%s", show)
	}

	// A bad spec names its field; nothing changes.
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("name: gate\nsource: {url: \"testpattern:\", fps: -1}\n"), 0o644)
	if out := run(1, "pipelines", "add", bad); !strings.Contains(out, "source.fps") {
		t.Errorf("a bad spec: %s", out)
	}
	// ledge.yaml's pipeline is not changed from here.
	if out := run(1, "pipelines", "rm", "pattern"); !strings.Contains(out, "ledge.yaml") {
		t.Errorf("removing a pipeline of ledge.yaml: %s", out)
	}
	if out := run(1, "pipelines", "add", "/dev/zero"); !strings.Contains(out, "at most") {
		t.Errorf("a spec that never ends: %s", out)
	}

	run(0, "pipelines", "rm", "door")
	var list []struct{ Name, Owner, State string }
	if err := json.Unmarshal([]byte(run(0, "pipelines", "list", "--json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Name != "pattern" || list[0].Owner != "config" {
		t.Errorf("after rm: %+v", list)
	}
}
