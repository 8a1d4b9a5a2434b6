package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"ledge/hub/fleet"
	"ledge/internal/testenv"
)

// broker is a real mosquitto with a password and persistence (retained
// messages survive a kill -9: it saves on every change), restartable on
// its port.
type broker struct {
	t    *testing.T
	bin  string
	conf string
	addr string
	mu   sync.Mutex
	cmd  *exec.Cmd
}

func startBroker(t *testing.T) *broker {
	t.Helper()
	b := &broker{t: t, bin: testenv.Command(t, "mosquitto", "mosquitto")}
	passwd := testenv.Command(t, "mosquitto_passwd", "mosquitto")
	dir := t.TempDir()
	pw := filepath.Join(dir, "passwd")
	if out, err := exec.Command(passwd, "-c", "-b", pw, "fleet", "fleet-pw").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v %s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	b.addr = fmt.Sprintf("127.0.0.1:%d", port)
	b.conf = filepath.Join(dir, "mosquitto.conf")
	os.WriteFile(b.conf, []byte(fmt.Sprintf("user root\nlistener %d 127.0.0.1\nallow_anonymous false\npassword_file %s\n"+
		"persistence true\npersistence_location %s/\nautosave_interval 1\nautosave_on_changes true\nmax_queued_messages 100000\n", port, pw, dir)), 0o644)
	b.start()
	t.Cleanup(func() { b.kill() })
	return b
}

func (b *broker) start() {
	b.t.Helper()
	b.mu.Lock()
	b.cmd = exec.Command(b.bin, "-c", b.conf)
	if err := b.cmd.Start(); err != nil {
		b.mu.Unlock()
		b.t.Fatal(err)
	}
	b.mu.Unlock()
	waitFor(b.t, 10*time.Second, "mosquitto listening", func() bool {
		c, err := net.Dial("tcp", b.addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func (b *broker) kill() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd != nil {
		b.cmd.Process.Kill()
		b.cmd.Wait()
		b.cmd = nil
	}
}

func waitFor(t testing.TB, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			if dumpOnFail != nil {
				dumpOnFail()
			}
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// dumpOnFail, when set, says what the fleet looked like when a wait
// failed.
var dumpOnFail func()

// fleetEnv is a fleet of real `ledge run` processes on one broker.
type fleetEnv struct {
	t       *testing.T
	run     string
	dir     string
	brokers []string // the CLI's and the controllers'
	key     string
	devices []*runningLedge
	ids     []string
}

func (f *fleetEnv) env() []string { return f.envWith(f.brokers) }

func (f *fleetEnv) envWith(brokers []string) []string {
	return []string{"LEDGE_FLEET_BROKER=" + strings.Join(brokers, ","), "LEDGE_FLEET_USERNAME=fleet",
		"LEDGE_FLEET_PASSWORD=fleet-pw", "LEDGE_FLEET_KEY=" + f.key}
}

// cli runs `ledge fleet args...` and fails the test on a non-zero exit.
func (f *fleetEnv) cli(args ...string) string {
	f.t.Helper()
	out, errOut, code := ledgeIn(f.t, "", f.env(), append([]string{"fleet"}, args...)...)
	if code != 0 {
		f.t.Fatalf("ledge fleet %v: exit %d\n%s%s", args, code, out, errOut)
	}
	return out
}

func (f *fleetEnv) status(name string) *fleet.DeploymentStatus {
	f.t.Helper()
	var st fleet.DeploymentStatus
	if err := json.Unmarshal([]byte(f.cli("status", name, "--json")), &st); err != nil {
		f.t.Fatal(err)
	}
	return &st
}

func (f *fleetEnv) devicesJSON() []fleet.DeviceRow {
	f.t.Helper()
	var rows []fleet.DeviceRow
	if err := json.Unmarshal([]byte(f.cli("devices", "--json")), &rows); err != nil {
		f.t.Fatal(err)
	}
	return rows
}

// controller is a `ledge fleet controller` process.
type controller struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{}
}

// passes is how many passes the controller has ended holding the lease:
// the "fleet pass done" lines of its debug log (fleet.Controller.Passes).
func (c *controller) passes() int { return strings.Count(c.stderr.String(), `msg="fleet pass done"`) }

// waitPasses waits until the controller has ended two passes that began
// after the call (the first to end may have begun before it): what the
// test saw on the broker before the call (through a CLI that connected
// after it was published, while the controller, subscribed all along,
// was handed it at once), the controller has seen and acted on, and
// what it published then has had a pass's time to reach the devices.
// Tests call it before they say that something did not happen.
func (c *controller) waitPasses(t *testing.T) {
	t.Helper()
	n := c.passes()
	waitFor(t, 30*time.Second, "two passes of the controller", func() bool { return c.passes() >= n+3 })
}

func (f *fleetEnv) startController(args ...string) *controller {
	f.t.Helper()
	return f.startControllerOn(f.brokers, args...)
}

// startControllerOn starts a controller that tries brokers in this order.
func (f *fleetEnv) startControllerOn(brokers []string, args ...string) *controller {
	f.t.Helper()
	c := &controller{stderr: &syncBuffer{}, done: make(chan struct{})}
	c.cmd = exec.Command(ledgeBin, append([]string{"fleet", "controller", "--log-level", "debug"}, args...)...)
	c.cmd.Env = append(os.Environ(), f.envWith(brokers)...)
	c.cmd.Stderr = c.stderr
	if err := c.cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	go func() { c.cmd.Wait(); close(c.done) }()
	f.t.Cleanup(func() { c.cmd.Process.Kill(); <-c.done })
	return c
}

// newFleet starts n appliances (hub and pipelines off) on the brokers,
// tagged by tags(i), trusting a fresh fleet key.
func newFleet(t *testing.T, n int, brokerURLs []string, tags func(i int) string) *fleetEnv {
	rb := make([]byte, 3)
	rand.Read(rb)
	f := &fleetEnv{t: t, run: hex.EncodeToString(rb), dir: t.TempDir(), brokers: brokerURLs}
	keyOut, errOut, code := ledge(t, "keys", "gen", "--out", filepath.Join(f.dir, "fleet"))
	if code != 0 {
		t.Fatalf("keys gen: %s", errOut)
	}
	trusted := strings.TrimSpace(keyOut[strings.Index(keyOut, `"ed25519:`):])
	f.key = filepath.Join(f.dir, "fleet.key")
	// One module network for all (created here: twenty agents creating
	// the same name at once would make twenty networks of that name).
	network := "ledge-fleet-" + f.run
	if out, err := testenv.DockerOutput("network", "create", network); err != nil {
		t.Fatalf("docker network create: %v %s", err, out)
	}
	t.Cleanup(func() {
		testenv.RemoveDocker("name=fl"+f.run, network)
	})
	var wg sync.WaitGroup
	errs := make([]error, n)
	f.devices = make([]*runningLedge, n)
	f.ids = make([]string, n)
	for i := range n {
		id := fmt.Sprintf("fl%s-%02d", f.run, i)
		f.ids[i] = id
		// Device i starts on node i of a cluster, the others after it.
		k := i % len(brokerURLs)
		mine := append(append([]string(nil), brokerURLs[k:]...), brokerURLs[:k]...)
		urls, extra := mine[0], ""
		if len(mine) > 1 {
			extra = "\n    urls: [" + strings.Join(mine[1:], ", ") + "]"
		}
		cfg := filepath.Join(f.dir, id+".yaml")
		os.WriteFile(cfg, []byte(fmt.Sprintf(`deviceId: %s
tags: {%s}
http: {listenTLS: ""}
hub:
  enabled: false
  upstream:
    mode: mqtt
    url: %s%s
    username: fleet
    password: fleet-pw
    keepAlive: 5s
agent:
  containerPrefix: %s-
  network: %s
  trustedKeys: [%s]
  rollback: {stableFor: 1s}
`, id, tags(i), urls, extra, id, network, trusted)), 0o644)
		wg.Go(func() {
			d := &runningLedge{addr: freePort(t), stderr: &syncBuffer{}, done: make(chan error, 1)}
			f.devices[i] = d
			errs[i] = start(t, d, "", nil, "run", "--config", cfg, "--data-dir", filepath.Join(f.dir, id))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("%s: %v", f.ids[i], err)
		}
	}
	return f
}

// mqttDeployments counts the deployments device i took from the broker.
func (f *fleetEnv) mqttDeployments(i int) []string {
	f.t.Helper()
	out, errOut, code := ledge(f.t, "deploy", "history", "--data-dir", filepath.Join(f.dir, f.ids[i]), "--limit", "100")
	if code != 0 {
		f.t.Fatalf("deploy history: %s", errOut)
	}
	var v []string
	for _, line := range strings.Split(out, "\n")[1:] {
		if fs := strings.Fields(line); len(fs) > 2 && fs[2] == "mqtt" {
			v = append(v, fs[1])
		}
	}
	return v
}

func fleetManifest(t *testing.T, dir, name, image string) string {
	p := filepath.Join(dir, name+".yaml")
	os.WriteFile(p, []byte(fmt.Sprintf("version: \"1\"\nmodules:\n  app:\n    image: %s\n    imagePullPolicy: never\n    env: {DEPLOYMENT: %s}\n", image, name)), 0o644)
	return p
}

// TestFleetRollout is the fleet's acceptance test: 20 appliances (real
// `ledge run`, hub and pipelines off) behind a real mosquitto; a
// deployment for 12 of them by tag rolls out in waves 1, 50%, 100% and
// each wave converges, with the controller killed mid-rollout and
// another finishing it once; a higher priority takes over 4 of them,
// with the broker killed (kill -9) mid-rollout; a deployment whose image
// does not exist aborts after its first wave and rolls that wave back.
func TestFleetRollout(t *testing.T) {
	testenv.Docker(t)
	b := startBroker(t)
	img := testImage(t, "fleet")
	n := 20
	f := newFleet(t, n, []string{"tcp://" + b.addr}, func(i int) string {
		tags := []string{"site: berlin"}
		if i%2 == 1 {
			tags[0] = "site: paris"
		}
		if i < 12 {
			tags = append(tags, "group: a")
		} else {
			tags = append(tags, "group: b")
		}
		if i < 4 {
			tags = append(tags, "hw: pi5")
		} else {
			tags = append(tags, "hw: pi4")
		}
		return strings.Join(tags, ", ")
	})
	var total, maxAnon float64
	for i, d := range f.devices {
		select {
		case err := <-d.done:
			d.done <- err
			t.Fatalf("%s exited: %v\n%s", f.ids[i], err, d.stderr)
		default:
		}
		anon, _ := rss(t, d.cmd.Process.Pid)
		total += anon
		maxAnon = max(maxAnon, anon)
	}
	t.Logf("%d appliances: RssAnon %.0f MiB in all, %.1f MiB the largest", n, total, maxAnon)

	// Every device shows up, online, with its tags.
	waitFor(t, 30*time.Second, "20 devices online", func() bool {
		online := 0
		for _, r := range f.devicesJSON() {
			if r.Online && r.Tags["group"] != "" {
				online++
			}
		}
		return online == n
	})
	out := f.cli("devices", "--where", "tags.group = 'a' AND tags.hw = 'pi5'")
	if !strings.Contains(out, "4 devices") || !strings.Contains(out, f.ids[0]) || strings.Contains(out, f.ids[4]+" ") {
		t.Fatalf("devices --where:\n%s", out)
	}

	ctl := f.startController()
	dumpOnFail = func() {
		out, errOut, _ := ledgeIn(t, "", f.env(), "fleet", "devices")
		t.Logf("devices:\n%s%s", out, errOut)
		for _, name := range []string{"people", "people-pi5", "broken"} {
			out, errOut, _ := ledgeIn(t, "", f.env(), "fleet", "status", name)
			t.Logf("status %s:\n%s%s", name, out, errOut)
		}
		t.Logf("controller:\n%s", tail(ctl.stderr.String(), 3000))
		for i, r := range f.devicesJSON() {
			if r.State != "" && r.State != "converged" {
				t.Logf("%s:\n%s", r.ID, tail(f.devices[i].stderr.String(), 3000))
				break
			}
		}
	}
	t.Cleanup(func() { dumpOnFail = nil })
	start := time.Now()
	f.cli("deploy", "people", fleetManifest(t, f.dir, "people", img), "--target", "tags.group = 'a'", "--priority", "10",
		"--waves", "1,50%,100%", "--soak", "2s", "--abort-after", "5%")

	// Each wave converges; the controller is killed during wave 2 and
	// another takes over.
	var killedAt int
	for wave := 1; wave <= 3; wave++ {
		want := []int{1, 6, 12}[wave-1]
		waitFor(t, 90*time.Second, fmt.Sprintf("wave %d converged", wave), func() bool {
			st := f.status("people")
			return st.Converged >= want && st.Failed == 0
		})
		st := f.status("people")
		t.Logf("wave %d converged after %s: %s", wave, time.Since(start).Round(time.Millisecond), waveLine(st))
		if st.Waves[wave-1].Converged != st.Waves[wave-1].Target || st.Targeted != 12 {
			t.Fatalf("wave %d: %+v", wave, st.Waves)
		}
		if wave == 1 {
			ctl.cmd.Process.Signal(syscall.SIGKILL)
			<-ctl.done
			killedAt = st.Converged
			ctl = f.startController()
		}
	}
	waitFor(t, 60*time.Second, "people completed", func() bool { return f.status("people").Phase == fleet.PhaseCompleted })
	t.Logf("people: 12 devices in 3 waves in %s (controller killed after %d converged)", time.Since(start).Round(time.Millisecond), killedAt)
	human := f.cli("status", "people")
	if !strings.Contains(human, "targeted 12, applied 12, converged 12, failed 0, pending 0") {
		t.Fatalf("status:\n%s", human)
	}
	for i := range n {
		got := f.mqttDeployments(i)
		switch {
		case i < 12 && len(got) != 1:
			t.Errorf("%s took %d deployments from the fleet (%v), want people once", f.ids[i], len(got), got)
		case i >= 12 && len(got) != 0:
			t.Errorf("%s is not targeted but took %v", f.ids[i], got)
		}
	}

	// A higher priority for 4 of them takes those 4 over; the broker is
	// killed mid-rollout and the rollout resumes when it is back.
	start = time.Now()
	f.cli("deploy", "people-pi5", fleetManifest(t, f.dir, "people-pi5", img), "--target", "tags.group = 'a' AND tags.hw = 'pi5'",
		"--priority", "20", "--waves", "1,100%", "--soak", "2s")
	waitFor(t, 60*time.Second, "people-pi5 wave 1 converged", func() bool { return f.status("people-pi5").Converged >= 1 })
	b.kill()
	time.Sleep(2 * time.Second)
	b.start()
	t.Logf("broker killed and restarted %s into people-pi5", time.Since(start).Round(time.Millisecond))
	waitFor(t, 90*time.Second, "people-pi5 completed", func() bool {
		st := f.status("people-pi5")
		return st.Phase == fleet.PhaseCompleted && st.Converged == 4
	})
	t.Logf("people-pi5: 4 devices taken over in %s", time.Since(start).Round(time.Millisecond))
	st := f.status("people")
	if st.Targeted != 8 || st.Converged != 8 {
		t.Errorf("people after the takeover: targeted %d converged %d, want 8", st.Targeted, st.Converged)
	}
	for _, r := range f.devicesJSON() {
		i, _ := strconv.Atoi(r.ID[len(r.ID)-2:])
		want := map[bool]string{true: "people-pi5", false: "people"}[i < 4]
		if i >= 12 {
			want = ""
		}
		if r.Deployment != want || (want != "" && r.State != "converged") {
			t.Errorf("%s: deployment %q state %q, want %q converged", r.ID, r.Deployment, r.State, want)
		}
	}

	// A deployment whose image does not exist aborts after its first wave,
	// and that wave goes back.
	start = time.Now()
	f.cli("deploy", "broken", fleetManifest(t, f.dir, "broken", "ledge-fleet-missing/none:"+f.run), "--target", "tags.group = 'a'",
		"--priority", "30", "--waves", "1,50%,100%", "--soak", "2s", "--abort-after", "5%")
	waitFor(t, 60*time.Second, "broken aborted", func() bool { return f.status("broken").Phase == fleet.PhaseAborted })
	st = f.status("broken")
	t.Logf("broken aborted after %s: %s", time.Since(start).Round(time.Millisecond), st.Reason)
	if !strings.Contains(st.Reason, "1 of 1 devices failed") || !strings.Contains(st.Reason, "ledge-fleet-missing") {
		t.Errorf("abort reason %q: want the one device and its error", st.Reason)
	}
	waitFor(t, 60*time.Second, "the failed wave rolled back", func() bool {
		st := f.status("broken")
		if len(st.RolledBack) != 1 || st.Applied != 0 {
			return false
		}
		for _, r := range f.devicesJSON() {
			if r.ID == st.RolledBack[0] {
				return r.State == "converged" && (r.Deployment == "people" || r.Deployment == "people-pi5")
			}
		}
		return false
	})
	// Nothing more happens to the others: what would, happens in a pass
	// that saw the wave rolled back.
	ctl.waitPasses(t)
	for _, r := range f.devicesJSON() {
		if r.Deployment == "broken" {
			t.Errorf("%s is given broken after its rollout aborted and its first wave rolled back", r.ID)
		}
	}
	given := 0
	for i := range 12 {
		for _, v := range f.mqttDeployments(i) {
			if strings.HasSuffix(v, "-broken") {
				given++
			}
		}
	}
	if given != 1 {
		t.Errorf("broken was given to %d devices, want 1 (its first wave)", given)
	}
	human = f.cli("status", "broken")
	t.Logf("ledge fleet status broken:\n%s", human)
	if !strings.Contains(human, "aborted") || !strings.Contains(human, "rolled back: "+st.RolledBack[0]) {
		t.Errorf("status of the aborted deployment:\n%s", human)
	}
	if strings.Count(ctl.stderr.String(), "fleet lease acquired") != 1 {
		t.Errorf("the second controller acquired the lease %d times:\n%s", strings.Count(ctl.stderr.String(), "fleet lease acquired"), ctl.stderr)
	}
}

func waveLine(st *fleet.DeploymentStatus) string {
	var parts []string
	for _, w := range st.Waves {
		parts = append(parts, fmt.Sprintf("wave %d %s: %d/%d converged", w.Wave, w.Size, w.Converged, w.Target))
	}
	return strings.Join(parts, ", ")
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
