package fleet

import (
	"context"
	"crypto/sha256"
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
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"ledge/internal/testenv"
)

// The fleet at scale, in a simulation: simulated agents are light MQTT
// clients (paho) that do what ledge's agent does on the wire: a
// presence with a last will, a retained state document, the retained
// deployment topic, and two state updates per deployment (applying,
// converged). A real controller rolls a deployment out to them in three
// waves through a real mosquitto. The baseline, in the same run, is the
// least any rollout costs the broker: one retained deployment published
// to every device directly, and the same two state updates back.

// simMosquitto is a mosquitto for the benchmark; pid for its CPU time.
func simMosquitto(tb testing.TB) (addr string, pid int) {
	bin := testenv.Command(tb, "mosquitto", "mosquitto")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	conf := filepath.Join(tb.TempDir(), "mosquitto.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("user root\nlistener %d 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n", port)), 0o644)
	cmd := exec.Command(bin, "-c", conf)
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			tb.Fatal("mosquitto not listening")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return addr, cmd.Process.Pid
}

// cpuTime is a process's user+system CPU time.
func cpuTime(tb testing.TB, pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), 0x29)+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

type simDevice struct {
	id        string
	topics    Topics
	cli       paho.Client
	doc       DeviceState
	take      atomic.Bool // subscribes to its deployment topic
	mu        sync.Mutex
	converged string   // digest
	taken     string   // digest of the last manifest taken
	versions  []string // every version taken, in order
}

type simCounters struct {
	msgs, bytes atomic.Int64
}

func (d *simDevice) publishState(c *simCounters) {
	d.mu.Lock()
	d.doc.At = time.Now().UTC()
	b, _ := json.Marshal(d.doc)
	d.mu.Unlock()
	c.msgs.Add(1)
	c.bytes.Add(int64(len(b) + len(d.topics.State(d.id))))
	d.cli.Publish(d.topics.State(d.id), 1, true, b).Wait()
}

func startSimDevice(tb testing.TB, addr string, i int, c *simCounters) *simDevice {
	return startSim(tb, addr, i, c, true)
}

// startSimDeviceLate starts a simulated agent that takes no deployment
// until subscribe.
func startSimDeviceLate(tb testing.TB, addr string, i int, c *simCounters) *simDevice {
	return startSim(tb, addr, i, c, false)
}

func startSim(tb testing.TB, addr string, i int, c *simCounters, take bool) *simDevice {
	t := DefaultTopics
	d := &simDevice{id: fmt.Sprintf("sim-%05d", i), topics: t}
	d.take.Store(take)
	d.doc = DeviceState{DeviceID: d.id, Tags: map[string]string{"site": fmt.Sprintf("site-%d", i%10), "hw": []string{"pi5", "pi4", "jetson"}[i%3]}}
	o := paho.NewClientOptions().AddBroker("tcp://"+addr).SetClientID(d.id).SetCleanSession(true).
		SetKeepAlive(60*time.Second).SetAutoReconnect(true).SetBinaryWill(t.Online(d.id), OfflinePayload, 1, true)
	o.SetOnConnectHandler(func(cli paho.Client) {
		if d.take.Load() {
			d.subscribeOn(cli, c)
		}
	})
	d.cli = paho.NewClient(o)
	if tok := d.cli.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		tb.Fatalf("%s: connect: %v", d.id, tok.Error())
	}
	on := OnlinePayload()
	c.msgs.Add(1)
	c.bytes.Add(int64(len(on) + len(t.Online(d.id))))
	d.cli.Publish(t.Online(d.id), 1, true, on).Wait()
	d.publishState(c)
	return d
}

// subscribe makes a late device take deployments from now on.
func (d *simDevice) subscribe(c *simCounters) {
	d.take.Store(true)
	d.subscribeOn(d.cli, c).Wait()
}

// subscribeOn subscribes to the device's deployment topic: each manifest
// that comes is applying, then converged; the one it took last, coming
// again, is ignored (as the agent ignores the same version again).
func (d *simDevice) subscribeOn(cli paho.Client, c *simCounters) paho.Token {
	return cli.Subscribe(d.topics.Deployment(d.id), 1, func(_ paho.Client, m paho.Message) {
		c.msgs.Add(1)
		c.bytes.Add(int64(len(m.Payload()) + len(m.Topic())))
		var env struct{ Manifest string }
		if json.Unmarshal(m.Payload(), &env) != nil {
			return
		}
		sum := sha256.Sum256([]byte(env.Manifest))
		digest := hex.EncodeToString(sum[:])
		version := env.Manifest[strings.LastIndex(env.Manifest, "version ")+8:]
		d.mu.Lock()
		again := d.taken == digest
		if !again {
			d.taken, d.versions = digest, append(d.versions, version)
		}
		d.mu.Unlock()
		if again {
			return
		}
		go func() {
			d.mu.Lock()
			d.doc.Properties.Reported.Deployment = &DeployedState{Version: version, Digest: digest, State: "applying"}
			d.mu.Unlock()
			d.publishState(c)
			d.mu.Lock()
			d.doc.Properties.Reported.Deployment = &DeployedState{Version: version, Digest: digest, State: "converged"}
			d.converged = digest
			d.mu.Unlock()
			d.publishState(c)
		}()
	})
}

// simSealer stands for the agent's envelope: the manifest with its
// version, signed with the fleet key.
type simSealer struct{ k edKeys }

func (s simSealer) Seal(m []byte, version string) ([]byte, string, error) {
	text := string(m) + "\n# version " + version
	sig, _ := s.k.Sign([]byte(text))
	b, err := json.Marshal(map[string]any{"manifest": text, "signature": sig})
	sum := sha256.Sum256([]byte(text))
	return b, hex.EncodeToString(sum[:]), err
}

func allConverged(devs []*simDevice, digest func(*simDevice) bool) bool {
	for _, d := range devs {
		d.mu.Lock()
		ok := digest(d)
		d.mu.Unlock()
		if !ok {
			return false
		}
	}
	return true
}

// simResult is one measured rollout and its baseline.
type simResult struct {
	rollTime, baseTime time.Duration
	rollCPU, baseCPU   time.Duration
	msgs, bytes        float64 // per device, everyone's traffic through the broker
	baseMsgs, baseByte float64
}

// simTimeout bounds each rollout of the simulation (it takes seconds).
const simTimeout = 3 * time.Minute

func simDevices() int {
	if v, err := strconv.Atoi(os.Getenv("LEDGE_FLEET_SIM_DEVICES")); err == nil && v > 0 {
		return v
	}
	return 1000
}

// TestFleetSimulation1000 runs the simulation once in make test: 1,000
// simulated agents, a three-wave rollout, every device on it at the end.
func TestFleetSimulation1000(t *testing.T) {
	simulate(t, simDevices(), func(loop func() simResult) { loop() })
}

// BenchmarkFleetRollout1000 rolls a deployment out to 1,000 simulated
// agents in waves 1, 10%, 100% (no soak), against the baseline of one
// direct retained publish per device. LEDGE_FLEET_SIM_DEVICES changes
// the number.
func BenchmarkFleetRollout1000(b *testing.B) {
	simulate(b, simDevices(), func(loop func() simResult) {
		for b.Loop() {
			r := loop()
			b.ReportMetric(r.rollTime.Seconds(), "rollout-s")
			b.ReportMetric(r.baseTime.Seconds(), "baseline-s")
			b.ReportMetric(r.rollTime.Seconds()/r.baseTime.Seconds(), "rollout/baseline")
			b.ReportMetric(r.msgs, "msgs/device")
			b.ReportMetric(r.baseMsgs, "baseline-msgs/device")
			b.ReportMetric(r.bytes, "bytes/device")
			b.ReportMetric(r.baseByte, "baseline-bytes/device")
			b.ReportMetric(r.rollCPU.Seconds(), "broker-cpu-s")
			b.ReportMetric(r.rollCPU.Seconds()/max(r.baseCPU.Seconds(), 0.01), "broker-cpu/baseline")
		}
	})
}

// simulate sets up n simulated agents, mosquitto and a controller, and
// hands run a function that measures one rollout.
func simulate(b testing.TB, n int, run func(loop func() simResult)) {
	addr, pid := simMosquitto(b)
	var dc simCounters
	devs := make([]*simDevice, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			devs[i] = startSimDevice(b, addr, i, &dc)
		})
	}
	wg.Wait()
	defer func() {
		for _, d := range devs {
			d.cli.Disconnect(0)
		}
	}()
	keys := testKeys()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := Dial(ctx, ConnConfig{URLs: []string{"tcp://" + addr}, ClientID: "bench-controller", Topics: DefaultTopics})
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	ctl := &Controller{Conn: conn, ID: "bench-controller", Verifier: keys, Sealer: simSealer{keys}, Settle: 100 * time.Millisecond}
	ctlDone := make(chan struct{})
	go func() { ctl.Run(ctx); close(ctlDone) }()
	defer func() { cancel(); <-ctlDone }()
	admin, err := Dial(ctx, ConnConfig{URLs: []string{"tcp://" + addr}, ClientID: "bench-admin", Topics: DefaultTopics})
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close()

	gen := int64(0)
	run(func() simResult {
		gen++
		// Baseline: the deployment published to each device directly.
		payload, digest, _ := simSealer{keys}.Seal([]byte(fmt.Sprintf("baseline %d", gen)), strconv.FormatInt(gen, 10))
		dc.msgs.Store(0)
		dc.bytes.Store(0)
		rm0, rb0 := admin.View().Received()
		am0, ab0 := admin.View().Sent()
		cpu0, t0 := cpuTime(b, pid), time.Now()
		for _, d := range devs {
			admin.Publish(ctx, DefaultTopics.Deployment(d.id), payload, true)
		}
		for !allConverged(devs, func(d *simDevice) bool { return d.converged == digest }) {
			if time.Since(t0) > simTimeout {
				b.Fatalf("baseline: not every device converged within %s", simTimeout)
			}
			time.Sleep(20 * time.Millisecond)
		}
		baseTime, baseCPU := time.Since(t0), cpuTime(b, pid)-cpu0
		am, ab := admin.View().Sent()
		rm, rb := admin.View().Received()
		baseMsgs := float64(dc.msgs.Load()+am-am0+rm-rm0) / float64(n)
		baseBytes := float64(dc.bytes.Load()+ab-ab0+rb-rb0) / float64(n)

		// The fleet: a definition on the broker, the controller rolls it out.
		def := &Definition{Name: "bench", Generation: gen, Created: time.Now().UTC(), Target: "tags.site != 'nowhere'", Priority: 1,
			Rollout: Policy{Waves: []string{"1", "10%", "100%"}, AbortAfter: "5%"}, State: StateActive, Manifest: fmt.Sprintf("fleet manifest %d", gen)}
		sealed, err := Seal(def, keys)
		if err != nil {
			b.Fatal(err)
		}
		dc.msgs.Store(0)
		dc.bytes.Store(0)
		cm0, cb0 := conn.View().Received()
		cs0, csb0 := conn.View().Sent()
		rbm0, rbb0 := conn.View().ReadBack()
		cpu0, t0 = cpuTime(b, pid), time.Now()
		admin.Publish(ctx, DefaultTopics.Definition("bench"), sealed, true)
		var waveAt []time.Duration
		for {
			s := conn.View().Snapshot(keys)
			if r := s.Rollouts["bench"]; r != nil && r.ManifestDigest == def.ManifestDigest() {
				for len(waveAt) < r.Wave {
					waveAt = append(waveAt, time.Since(t0))
				}
				if r.Phase == PhaseCompleted {
					break
				}
			}
			if time.Since(t0) > simTimeout {
				b.Fatalf("the rollout did not complete within %s: %+v", simTimeout, s.Rollouts["bench"])
			}
			time.Sleep(20 * time.Millisecond)
		}
		rollTime, rollCPU := time.Since(t0), cpuTime(b, pid)-cpu0
		cm, cb := conn.View().Received()
		cs, csb := conn.View().Sent()
		// The controller's read-back of its records (a second after its
		// last writes) is left out of the window whether or not it
		// landed inside it (a slow run), and counted apart below.
		rbm, rbb := conn.View().ReadBack()
		cm, cb = cm-(rbm-rbm0), cb-(rbb-rbb0)
		msgs := float64(dc.msgs.Load()+(cm-cm0)+(cs-cs0)+1) / float64(n)
		bytes := float64(dc.bytes.Load()+(cb-cb0)+(csb-csb0)+int64(len(sealed))) / float64(n)
		b.Logf("%d devices: rollout %s (waves 2 and 3 recorded at %v), baseline %s; %.1f msgs and %.0f bytes per device (baseline %.1f and %.0f); broker CPU %s (baseline %s)",
			n, rollTime.Round(time.Millisecond), waveAt, baseTime.Round(time.Millisecond), msgs, bytes, baseMsgs, baseBytes, rollCPU, baseCPU)
		// The read-back is done once every device's assignment record
		// came back (a second or two after the rollout).
		for deadline := time.Now().Add(30 * time.Second); ; {
			m, _ := conn.View().ReadBack()
			if m-rbm0 >= int64(n) || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		rbm, rbb = conn.View().ReadBack()
		b.Logf("read back after the rollout: %.2f msgs and %.0f bytes per device", float64(rbm-rbm0)/float64(n), float64(rbb-rbb0)/float64(n))
		s := conn.View().Snapshot(keys)
		onIt := 0
		for _, d := range devs {
			d.mu.Lock()
			if a := s.Devices[d.id].Assignment; a != nil && a.Deployment == "bench" && a.ManifestDigest == def.ManifestDigest() && d.converged == a.Digest {
				onIt++
			}
			d.mu.Unlock()
		}
		if onIt != n {
			b.Fatalf("rollout completed with %d of %d devices converged on it", onIt, n)
		}
		var state, assign int
		for _, d := range s.Devices {
			state += len(d.Doc)
			ab, _ := json.Marshal(d.Assignment)
			assign += len(ab)
		}
		b.Logf("retained per device: state %d bytes, assignment %d bytes, deployment %d bytes, online %d bytes",
			state/len(s.Devices), assign/len(s.Devices), len(payload), len(OnlinePayload()))
		return simResult{rollTime: rollTime, baseTime: baseTime, rollCPU: rollCPU, baseCPU: baseCPU,
			msgs: msgs, bytes: bytes, baseMsgs: baseMsgs, baseByte: baseBytes}
	})
}
