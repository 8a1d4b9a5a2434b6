package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"ledge/internal/testenv"
	"ledge/pipeline"
)

// TestStatusShowsFailures: a camera that refuses and a pipeline whose
// model file is missing each show in `ledge status` with their state and
// reason, beside the one that runs; the log says each once at WARN; and
// FFmpeg's own messages go into the log (DEBUG), not raw to stderr.
func TestStatusShowsFailures(t *testing.T) {
	dir := t.TempDir()
	cam := "rtsp://" + freePort(t) + "/cam"
	cfg := filepath.Join(dir, "ledge.yaml")
	os.WriteFile(cfg, []byte(`log: {level: debug}
http: {listenTLS: 127.0.0.1:0}
hub: {listen: {mqtt: 127.0.0.1:0, mqtts: 127.0.0.1:0}}
pipelines:
  - name: pattern
    source: {url: "testpattern:", fps: 10, width: 320, height: 240}
  - name: gate
    source: {url: "`+cam+`"}
  - name: door
    source: {url: "testpattern:", fps: 5}
    detect: {model: models/door.onnx}
`), 0o644)
	d := &runningLedge{addr: freePort(t), stderr: &syncBuffer{}, done: make(chan error, 1)}
	launch(t, d, "", nil, "run", "--config", cfg, "--data-dir", t.TempDir())
	var out string
	deadline := time.Now().Add(20 * time.Second)
	for {
		var code int
		var errOut string
		out, errOut, code = ledge(t, "status", "--config", cfg, "--data-dir", d.dataDir(t))
		if code != 0 {
			t.Fatalf("status: exit %d %s", code, errOut)
		}
		if strings.Contains(out, "pipelines  3, 1 running, 2 failing") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never shows 1 running and 2 failing:\n%s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, re := range []string{
		`(?m)^  pattern +running +\d+\.\d/\d+\.\d`,
		`(?m)^  gate +backoff .*open rtsp://127\.0\.0\.1:\d+/cam`,
		`(?m)^  door +failed .*detect\.model: open ` + regexp.QuoteMeta(filepath.Join(dir, "models", "door.onnx")),
		`(?m)^health +ok`,
		`(?m)^hub +.*0 clients`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("status lacks %s:\n%s", re, out)
		}
	}
	// For a monitoring script: the default exit code follows the
	// components' health (ok here); --check fails on the pipelines too.
	out, errOut, code := ledge(t, "status", "--check", "--config", cfg, "--data-dir", d.dataDir(t))
	if code != 1 || !strings.HasPrefix(out, "FAILING: 2 problems\n") || !strings.Contains(out, "pipeline gate backoff: open rtsp://") ||
		!strings.Contains(out, "pipeline door failed: detect.model: open ") || strings.Contains(out, "pattern") {
		t.Errorf("status --check with two failing pipelines: exit %d, want 1 and both named\n%s%s", code, out, errOut)
	}
	out, _, code = ledge(t, "status", "--check", "--json", "--config", cfg, "--data-dir", d.dataDir(t))
	var rep struct{ Problems []string }
	if code != 1 || json.Unmarshal([]byte(out), &rep) != nil || len(rep.Problems) != 2 {
		t.Errorf("status --check --json: exit %d, problems %q\n%s", code, rep.Problems, out)
	}
	// A few more reconnection attempts, each said at DEBUG only.
	for deadline := time.Now().Add(20 * time.Second); strings.Count(d.stderr.String(), `level=DEBUG msg="pipeline source failing"`) < 2; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no more reconnection attempts of the camera in 20 s:\n%s", d.stderr.String())
		}
	}
	log := d.stderr.String()
	if n := strings.Count(log, `level=WARN msg="pipeline source failing"`); n != 1 || !strings.Contains(log, "pipeline=gate") {
		t.Errorf("%d WARNs for the camera, want 1:\n%s", n, log)
	}
	if n := strings.Count(log, `level=WARN msg="pipeline failing"`); n != 1 || !strings.Contains(log, "pipeline=door") {
		t.Errorf("%d WARNs for the pipeline without its model, want 1:\n%s", n, log)
	}
	native := 0
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "[tcp @") || strings.Contains(line, "Connection refused") {
			if !strings.HasPrefix(line, "time=") {
				t.Errorf("a raw native line on stderr: %q", line)
			}
			if strings.Contains(line, "level=DEBUG") && strings.Contains(line, "component=ffmpeg") {
				native++
			}
		}
	}
	if native == 0 {
		t.Errorf("FFmpeg's messages are not in the log at DEBUG:\n%s", log)
	}
}

// TestStatusExitCodes: `ledge status` (and --json) exits 1 while a
// component fails (no Docker engine at agent.dockerHost), and 3 when
// ledge is not running: after kill -9 (its socket left behind) and with a
// data dir no ledge ever ran in. (0 when healthy: TestStatusTalksToDaemon.)
func TestStatusExitCodes(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "ledge.yaml")
	os.WriteFile(cfg, []byte("deviceId: exitcodes-"+filepath.Base(dir)+"\nhttp: {listenTLS: 127.0.0.1:0}\nhub: {listen: {mqtt: 127.0.0.1:0, mqtts: 127.0.0.1:0}}\n"+
		"agent:\n  dockerHost: unix://"+filepath.Join(dir, "no-docker.sock")+"\n"), 0o644)
	d := &runningLedge{addr: freePort(t), stderr: &syncBuffer{}, done: make(chan error, 1)}
	launch(t, d, "", nil, "run", "--config", cfg, "--data-dir", filepath.Join(dir, "data"))
	base := []string{"--config", cfg, "--data-dir", filepath.Join(dir, "data")}
	for _, args := range [][]string{{"status"}, {"status", "--json"}} {
		out, errOut, code := ledge(t, append(args, base...)...)
		if code != 1 || !strings.Contains(out, "FAILING") && !strings.Contains(out, `"failing"`) {
			t.Errorf("ledge %v with a component failing: exit %d, want 1\n%s%s", args, code, out, errOut)
		}
	}
	d.cmd.Process.Kill()
	<-d.done
	d.done <- nil
	_, errOut, code := ledge(t, append([]string{"status"}, base...)...)
	if code != 3 || !strings.Contains(errOut, "ledge is not running") {
		t.Errorf("after kill -9: exit %d, want 3: %s", code, errOut)
	}
	_, errOut, code = ledge(t, "status", "--data-dir", t.TempDir())
	if code != 3 || !strings.Contains(errOut, "ledge is not running") {
		t.Errorf("never ran: exit %d, want 3: %s", code, errOut)
	}
}

// TestUncleanStopNoted: after kill -9, the next start says once at WARN
// that the previous run did not stop cleanly, and ledge status (and the
// API behind the Overview) shows it; after a clean stop, the next start
// says nothing of the kind.
func TestUncleanStopNoted(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "ledge.yaml")
	os.WriteFile(cfg, []byte("deviceId: unclean-"+filepath.Base(dir)+"\nhttp: {listenTLS: 127.0.0.1:0}\nhub: {listen: {mqtt: 127.0.0.1:0, mqtts: 127.0.0.1:0}}\n"), 0o644)
	data := filepath.Join(dir, "data")
	start := func() *runningLedge {
		d := &runningLedge{addr: freePort(t), stderr: &syncBuffer{}, done: make(chan error, 1)}
		return launch(t, d, "", nil, "run", "--config", cfg, "--data-dir", data)
	}
	const warn = "did not stop cleanly (killed or crashed)"
	first := start()
	if strings.Contains(first.stderr.String(), warn) {
		t.Errorf("first start speaks of an unclean stop:\n%s", first.stderr)
	}
	pid := first.cmd.Process.Pid
	first.cmd.Process.Kill()
	<-first.done
	first.done <- nil

	second := start()
	log := second.stderr.String()
	if n := strings.Count(log, warn); n != 1 || !regexp.MustCompile(`level=WARN msg="the previous run \(pid `+strconv.Itoa(pid)+`, started [^"]*\) did not stop cleanly \(killed or crashed\) at about [^"]*; state restored from the database"`).MatchString(log) {
		t.Errorf("after kill -9: %d notes, want one WARN naming pid %d:\n%s", n, pid, log)
	}
	out, errOut, _ := ledge(t, "status", "--config", cfg, "--data-dir", data)
	if !strings.Contains(out, "the previous run (pid "+strconv.Itoa(pid)+") "+warn) {
		t.Errorf("status after kill -9:\n%s%s", out, errOut)
	}
	second.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-second.done; err != nil {
		t.Fatalf("stop: %v\n%s", err, second.stderr)
	}
	second.done <- nil

	third := start()
	if strings.Contains(third.stderr.String(), warn) {
		t.Errorf("after a clean stop: %s", third.stderr)
	}
	out, _, _ = ledge(t, "status", "--config", cfg, "--data-dir", data)
	if strings.Contains(out, warn) {
		t.Errorf("status after a clean stop:\n%s", out)
	}
}

// TestHubUnreachableNote: when the daemon says why modules cannot reach
// the hub (it listens on loopback only), `ledge status` and `ledge deploy
// status` say it once below their module table, as the Modules page does
// beside each module.
func TestHubUnreachableNote(t *testing.T) {
	why := `the hub listens on 127.0.0.1:8883 only, which containers on the module network cannot reach: set hub.listen.mqtts in ledge.yaml to an address they reach (e.g. \":8883\")`
	raw := json.RawMessage(`{"modules": {
		"a": {"hub": {"identity": "gw/a", "connected": false, "since": "2026-12-05T09:00:00Z", "seen": false, "unreachable": "` + why + `"}},
		"b": {"hub": {"identity": "gw/b", "connected": false, "since": "2026-12-05T09:00:00Z", "seen": false, "unreachable": "` + why + `"}},
		"c": {"hub": {"identity": "gw/c", "connected": true, "since": "2026-12-05T09:00:00Z", "seen": true}}}}`)
	got := hubUnreachableNote(moduleHubLinks(raw))
	want := `modules a, b cannot connect: the hub listens on 127.0.0.1:8883 only, which containers on the module network cannot reach: set hub.listen.mqtts in ledge.yaml to an address they reach (e.g. ":8883")`
	if got != want {
		t.Errorf("note:\n%s\nwant\n%s", got, want)
	}
	if n := hubUnreachableNote(moduleHubLinks(json.RawMessage(`{"modules": {"c": {"hub": {"identity": "gw/c", "connected": true}}}}`))); n != "" {
		t.Errorf("note with every module connected: %q", n)
	}
}

// TestHubLinkText: a module's link to the hub in the module tables reads
// as the Modules page says it: "never connected since ledge started" (its
// own start may be later), not "never connected (since start ...)".
func TestHubLinkText(t *testing.T) {
	at := time.Date(2026, 12, 5, 9, 6, 49, 0, time.Local)
	for _, tc := range []struct {
		l    *hubLink
		want string
	}{
		{nil, "-"},
		{&hubLink{Connected: true, Since: at, Seen: true}, "connected since 09:06:49"},
		{&hubLink{Since: at, Seen: true}, "not connected since 09:06:49"},
		{&hubLink{Since: at}, "never connected since ledge started 09:06:49"},
	} {
		if got := tc.l.text(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.l, got, tc.want)
		}
	}
}

// TestStatusShowsModelRollback: a deployment whose model fails (a wrong
// digest) is rolled back; `ledge status` says so with the reason, as
// `ledge deploy status` does (it said only that the previous deployment
// converged), and shows the models section while it is not ready.
func TestStatusShowsModelRollback(t *testing.T) {
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	startLedge(t, "--data-dir", dataDir)
	base := []string{"--data-dir", dataDir}
	// A file under the data dir is a file:// source any deployment may use.
	data, err := os.ReadFile(testenv.Model(t, "fastestdet.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	model := filepath.Join(dataDir, "files", "people.onnx")
	os.MkdirAll(filepath.Dir(model), 0o755)
	if err := os.WriteFile(model, data, 0o644); err != nil {
		t.Fatal(err)
	}
	deployment := func(version, sha string) string {
		f := filepath.Join(dir, "d"+version+".yaml")
		os.WriteFile(f, []byte(`version: "d`+version+`"
models:
  - name: people
    version: "`+version+`"
    url: file://`+model+`
    sha256: `+sha+`
    kind: fastestdet
`), 0o644)
		return f
	}
	good := "ff3f62a1c86db3c144b969dd3085502311f86363c7ac920e54606ee9f3135b0f"
	if out, errOut, code := ledge(t, append([]string{"deploy", "apply", "--wait", deployment("1", good)}, base...)...); code != 0 {
		t.Fatalf("apply d1: %d %s%s", code, out, errOut)
	}
	if out, errOut, code := ledge(t, append([]string{"deploy", "apply", "--wait", deployment("2", strings.Repeat("ab", 32))}, base...)...); code == 0 {
		t.Fatalf("apply d2 (a wrong digest) succeeded: %s%s", out, errOut)
	}
	out, errOut, code := ledge(t, append([]string{"status"}, base...)...)
	if code != 0 {
		t.Fatalf("status: %d %s", code, errOut)
	}
	for _, re := range []string{
		`(?m)^deployment "d1" \(id 1, api\): converged`,
		`(?m)^ +rolled back from "d2": section models: people@2 failed: download: digest mismatch`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("status lacks %s:\n%s", re, out)
		}
	}
}

// TestStatusModelsSection: while the models of the deployment are not
// all active, `ledge status` says what they wait for or why they failed;
// when they are, it says nothing of them.
func TestStatusModelsSection(t *testing.T) {
	for _, tc := range []struct{ sections, want string }{
		{`{"models": {"state": "pending", "detail": "people@3 downloading 42%"}}`, "models     pending: people@3 downloading 42% (ledge models list)\n"},
		{`{"models": {"state": "failed", "detail": "people@3 failed: download: 404 Not Found"}}`, "models     failed: people@3 failed: download: 404 Not Found (ledge models list)\n"},
		{`{"models": {"state": "ready"}}`, ""},
	} {
		var b strings.Builder
		printDeployment(&b, json.RawMessage(`{"deployment": {"id": 3, "version": "v3", "source": "api", "state": "applying"}, "engine": {"connected": true}, "sections": `+tc.sections+`}`))
		got := strings.TrimPrefix(b.String(), "\ndeployment \"v3\" (id 3, api): applying\n")
		got = strings.TrimSuffix(got, "modules    none\n")
		if got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.sections, got, tc.want)
		}
	}
}

// TestStatusShowsRejectedManifest: a manifest refused after the current
// deployment arrived (pushed with a typo from upstream, say) is in
// `ledge status` with its source, time and reason, as it is in the log
// and in deploy status; one refused before the current deployment is
// history and is not.
func TestStatusShowsRejectedManifest(t *testing.T) {
	at := time.Date(2026, 12, 5, 12, 31, 33, 0, time.UTC).Local().Format("2006-01-02 15:04:05")
	rejected := `"rejected": {"source": "mqtt", "at": "2026-12-05T12:31:33.6005753", "reason": "manifest: line 3, column 57: modules.web.restartPolicy: \"sometimes\" is not a restart policy"}`
	for _, tc := range []struct {
		received string
		want     bool
	}{{"2026-12-05T12:00:00.0000000", true}, {"2026-12-05T13:00:00.0000000", false}} {
		var b strings.Builder
		printDeployment(&b, json.RawMessage(`{"deployment": {"id": 1, "version": "1", "source": "api", "state": "converged", "receivedAt": "`+tc.received+`"}, "engine": {"connected": true}, `+rejected+`}`))
		line := "           manifest rejected (from mqtt at " + at + "), the running deployment stays: manifest: line 3, column 57: modules.web.restartPolicy: \"sometimes\" is not a restart policy\n"
		if got := strings.Contains(b.String(), line); got != tc.want {
			t.Errorf("deployment received %s: rejection shown %v, want %v:\n%s", tc.received, got, tc.want, b.String())
		}
	}
	var b strings.Builder
	printDeployment(&b, json.RawMessage(`{"engine": {"connected": true}, `+rejected+`}`))
	if !strings.Contains(b.String(), "manifest rejected (from mqtt at "+at+")") {
		t.Errorf("no deployment yet, a rejected one:\n%s", b.String())
	}
}

// TestStatusShowsFailingAction: a running pipeline whose webhook's
// target is down shows the action and why in its REASON column, and the
// summary line counts it; once it delivers again, nothing of it is left.
func TestStatusShowsFailingAction(t *testing.T) {
	raw := json.RawMessage(`{"pipelines": [
		{"name": "door", "running": true, "state": "running", "fpsIn": 25, "fpsOut": 25, "actions": [
			{"name": "snapshot-1", "type": "snapshot", "delivered": 4},
			{"name": "webhook-0", "type": "webhook", "failed": 3, "lastError": "webhook http://10.0.0.9/hook: 503 Service Unavailable", "failing": true, "failingSince": "2026-12-05T09:06:49Z"}]},
		{"name": "yard", "running": true, "state": "running", "fpsIn": 5, "fpsOut": 5}]}`)
	var out strings.Builder
	printPipelines(&out, raw)
	for _, re := range []string{
		`(?m)^pipelines  2, 2 running, 0 failing, 1 with a failing action$`,
		`(?m)^  door +running +25\.0/25\.0 +- +action webhook-0 failing: webhook http://10\.0\.0\.9/hook: 503 Service Unavailable \(since \d\d:\d\d:\d\d\)$`,
		`(?m)^  yard +running +5\.0/5\.0 +- *$`,
	} {
		if !regexp.MustCompile(re).MatchString(out.String()) {
			t.Errorf("status lacks %s:\n%s", re, out.String())
		}
	}
	out.Reset()
	printPipelines(&out, json.RawMessage(strings.ReplaceAll(strings.ReplaceAll(string(raw), `"failing": true, `, ""), `"failingSince": "2026-12-05T09:06:49Z"`, `"delivered": 1`)))
	if strings.Contains(out.String(), "failing action") || strings.Contains(out.String(), "webhook-0") {
		t.Errorf("status after the action recovered:\n%s", out.String())
	}
}

// TestStatusProblems: what `ledge status --check` counts as failing, one
// line each: a component, the data disk, a pipeline that fails, one whose
// action fails, a module in back-off, the models section, the upstream
// link; what works is not listed, and a healthy report has none.
func TestStatusProblems(t *testing.T) {
	rep := &statusReport{
		Health: json.RawMessage(`{"status": "failing", "components": [{"name": "agent", "status": "failing", "error": "docker engine unreachable at unix:///x.sock"}, {"name": "hub", "status": "ok"}]}`),
		System: json.RawMessage(`{"diskLow": "only 12.0 MiB free on the data dir's file system (/d)"}`),
		Pipelines: json.RawMessage(`{"pipelines": [
			{"name": "gate", "state": "backoff", "reason": "open rtsp://10.0.0.9/cam: no stream"},
			{"name": "door", "state": "running", "actions": [{"name": "webhook-0", "failing": true, "lastError": "503 Service Unavailable"}, {"name": "mqtt-1", "failing": true, "lastError": "not connected"}]},
			{"name": "yard", "state": "running"},
			{"name": "old", "state": "stopped"}]}`),
		Deployment: json.RawMessage(`{"modules": {"crasher": {"runtimeStatus": "backoff", "statusDescription": "exited with code 3; restart 4 in 1m20s"}, "ok": {"runtimeStatus": "running"}},
			"sections": {"models": {"state": "failed", "detail": "people@2 failed: download: digest mismatch"}}, "engine": {"connected": false}}`),
		Hub: json.RawMessage(`{"upstream": {"mode": "mqtt", "broker": "tcp://10.0.0.1:1883", "state": "connecting", "lastError": "connection refused"}}`),
	}
	got := strings.Join(statusProblems(rep), "\n")
	for _, want := range []string{
		"component agent: docker engine unreachable at unix:///x.sock",
		"data disk low: only 12.0 MiB free",
		"pipeline gate backoff: open rtsp://10.0.0.9/cam: no stream",
		"pipeline door: action webhook-0 failing: 503 Service Unavailable",
		"pipeline door: action mqtt-1 failing: not connected",
		"module crasher backoff: exited with code 3",
		"models failed: people@2 failed: download: digest mismatch",
		"upstream tcp://10.0.0.1:1883 connecting: connection refused",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("problems lack %q:\n%s", want, got)
		}
	}
	for _, not := range []string{"yard", "old", "component hub", "module ok"} {
		if strings.Contains(got, not) {
			t.Errorf("problems list %q, which works:\n%s", not, got)
		}
	}
	healthy := &statusReport{
		Health:     json.RawMessage(`{"status": "ok", "components": [{"name": "hub", "status": "ok"}]}`),
		System:     json.RawMessage(`{}`),
		Pipelines:  json.RawMessage(`{"pipelines": [{"name": "yard", "state": "running"}]}`),
		Deployment: json.RawMessage(`{"modules": {"ok": {"runtimeStatus": "running"}}, "engine": {"connected": true}}`),
		Hub:        json.RawMessage(`{"upstream": {"mode": "mqtt", "state": "connected"}}`),
	}
	if p := statusProblems(healthy); len(p) != 0 {
		t.Errorf("a healthy ledge has problems: %q", p)
	}
}

// TestReasonKeepsSince: a long reason is shortened for a table, and since
// when it fails stays at its end (`ledge pipelines list` cut it off).
func TestReasonKeepsSince(t *testing.T) {
	p := pipeline.Stats{Name: "rtsp", State: pipeline.StateBackoff, Reason: "open rtsp://127.0.0.1:32989/cam: no stream: " + strings.Repeat("the camera is offline or refuses ", 5),
		FailingSince: time.Date(2026, 12, 5, 15, 40, 37, 0, time.Local)}
	got := reasonText(p, 100)
	if !strings.HasSuffix(got, "… (since 2026-12-05 15:40:37)") || !strings.HasPrefix(got, "open rtsp://") {
		t.Errorf("reason %q: want it shortened with since when at its end", got)
	}
	if got := reasonText(pipeline.Stats{State: pipeline.StateRunning}, 100); got != "-" {
		t.Errorf("reason of a running pipeline: %q", got)
	}
}
