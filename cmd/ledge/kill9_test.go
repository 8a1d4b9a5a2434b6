package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestKill9KeepsWhatTheCLIWasToldIsDone: every change the CLI reported
// done (an identity, a pipeline, a deployment, an API token, the admin
// password) is there after `kill -9` of the daemon and a new start on the
// same data dir.
func TestKill9KeepsWhatTheCLIWasToldIsDone(t *testing.T) {
	conf := siteConfig(t)
	dir := filepath.Dir(conf)
	rt := []string{"LEDGE_RUNTIME_DIR=" + t.TempDir()}
	d := launch(t, &runningLedge{addr: freePort(t), stderr: &syncBuffer{}, done: make(chan error, 1)}, "", rt, "run", "--config", conf)
	cli := func(stdin string, args ...string) string {
		t.Helper()
		out, errOut, code := ledgeStdin(t, "", stdin, rt, append(args, "--config", conf)...)
		if code != 0 {
			t.Fatalf("ledge %v: exit %d\n%s\n%s", args, code, out, errOut)
		}
		return out
	}
	cli("", "identity", "add", "k9-device")
	pipe := filepath.Join(dir, "cam.yaml")
	os.WriteFile(pipe, []byte("name: k9cam\nsource: {url: \"testpattern:\", width: 160, height: 120, fps: 5}\n"), 0o644)
	cli("", "pipelines", "add", pipe)
	dep := filepath.Join(dir, "deployment.yaml")
	os.WriteFile(dep, []byte("version: k9-1\npipelines:\n  - name: k9dep\n    source: {url: \"testpattern:\", width: 160, height: 120, fps: 5}\n"), 0o644)
	cli("", "deploy", "apply", dep)
	token := strings.TrimSpace(cli("", "admin", "token", "create", "k9"))
	cli("k9 password that is long\n", "admin", "set-password")

	d.cmd.Process.Kill() // kill -9, nothing flushed on the way out
	<-d.done
	d.done <- nil
	d = launch(t, &runningLedge{addr: d.addr, stderr: &syncBuffer{}, done: make(chan error, 1)}, "", rt, "run", "--config", conf)

	if out := cli("", "identity", "list"); !strings.Contains(out, "k9-device") {
		t.Errorf("the identity is gone:\n%s", out)
	}
	out := cli("", "pipelines", "list")
	for _, p := range []string{"k9cam", "k9dep"} {
		if !strings.Contains(out, p) {
			t.Errorf("pipeline %s is gone:\n%s", p, out)
		}
	}
	if out := cli("", "deploy", "status"); !strings.Contains(out, "k9-1") {
		t.Errorf("the deployment is gone:\n%s", out)
	}
	req, _ := http.NewRequest("GET", "http://"+d.addr+"/api/v1/system", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("the API token after the restart: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	resp, err := http.Post("http://"+d.addr+"/api/v1/auth/login", "application/json", strings.NewReader(`{"password": "k9 password that is long"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("the new admin password after the restart: login answers %d", resp.StatusCode)
	}
}
