package hub

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"ledge/internal/testenv"
)

// benchBrokers starts mosquitto (set_tcp_nodelay true, no persistence)
// and a ledge hub in a child process (dev mode: anonymous on loopback, as
// mosquitto's allow_anonymous), both on free loopback ports.
type benchBrokers struct {
	mqURL, hubURL string
	mqPID, hubPID int
}

func startBenchBrokers(b *testing.B, routes map[string]RouteConfig) benchBrokers {
	bin := testenv.Command(b, "mosquitto", "mosquitto")
	dir := b.TempDir()
	port := freePort(b)
	conf := filepath.Join(dir, "mosquitto.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("user root\nlistener %d 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\npersistence false\nlog_dest stderr\nlog_type error\n", port)), 0o644)
	mq := exec.Command(bin, "-c", conf)
	if err := mq.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { mq.Process.Signal(syscall.SIGTERM); mq.Wait() })

	cfg := DefaultConfig()
	cfg.Listen = ListenConfig{MQTT: "127.0.0.1:0"}
	cfg.Routes = routes
	c := startChild(b, childSpec{Dir: dir, Dev: true, Config: cfg})
	b.Cleanup(func() { // graceful, so LEDGE_HUB_CPUPROFILE is written
		c.cmd.Process.Signal(syscall.SIGTERM)
		time.Sleep(2 * time.Second)
	})
	time.Sleep(300 * time.Millisecond)
	return benchBrokers{mqURL: fmt.Sprintf("tcp://127.0.0.1:%d", port), hubURL: fmt.Sprintf("tcp://127.0.0.1:%d", c.port), mqPID: mq.Process.Pid, hubPID: c.pid}
}

// BenchmarkHubVsMosquitto runs the same loads against mosquitto and the
// hub, interleaved round by round, and reports the hub's delivered rate,
// broker CPU per delivered message and p99 latency as ratios to
// mosquitto's, plus both brokers' absolute figures and RSS.
func BenchmarkHubVsMosquitto(b *testing.B) {
	sat := 2 * time.Second
	paced := 2 * time.Second
	loads := []load{
		{Name: "1x1-q0", Pubs: 1, Subs: 1, QoS: 0},
		{Name: "1x1-q1", Pubs: 1, Subs: 1, QoS: 1},
		{Name: "10x1-q1", Pubs: 10, Subs: 1, QoS: 1},
		{Name: "1x10-q0", Pubs: 1, Subs: 10, QoS: 0},
	}
	rates := map[string]int{"1x1-q0": 5000, "1x1-q1": 5000, "10x1-q1": 500, "1x10-q0": 1000}
	bb := startBenchBrokers(b, nil)
	b.Logf("idle RSS KiB: mosquitto %d, hub %d", procRSS(bb.mqPID), procRSS(bb.hubPID))
	for _, l := range loads {
		l.Topic, l.Filter = "bench/"+l.Name, "bench/"+l.Name
		for _, mode := range []string{"sat", "paced"} {
			b.Run(l.Name+"-"+mode, func(b *testing.B) {
				ld := l
				ld.Duration = sat
				if mode == "paced" {
					ld.Rate, ld.Duration = rates[l.Name], paced
				}
				var mq, hb []loadResult
				for b.Loop() {
					r1, err := runLoad(bb.mqURL, bb.mqPID, ld)
					if err != nil {
						b.Fatal(err)
					}
					r2, err := runLoad(bb.hubURL, bb.hubPID, ld)
					if err != nil {
						b.Fatal(err)
					}
					mq, hb = append(mq, r1), append(hb, r2)
				}
				reportPair(b, mq, hb)
			})
		}
	}
	b.Logf("end RSS KiB: mosquitto %d, hub %d", procRSS(bb.mqPID), procRSS(bb.hubPID))
}

func reportPair(b *testing.B, mq, hb []loadResult) {
	m, h := mean(mq), mean(hb)
	b.ReportMetric(h.Rate/m.Rate, "rate/mosq")
	if m.cpuPerMsg() > 0 {
		b.ReportMetric(h.cpuPerMsg()/m.cpuPerMsg(), "cpu/mosq")
	}
	if m.P99 > 0 {
		b.ReportMetric(float64(h.P99)/float64(m.P99), "p99/mosq")
	}
	b.ReportMetric(h.Rate, "hub-msg/s")
	b.ReportMetric(m.Rate, "mosq-msg/s")
	b.ReportMetric(h.cpuPerMsg(), "hub-cpu-µs/msg")
	b.ReportMetric(m.cpuPerMsg(), "mosq-cpu-µs/msg")
	b.ReportMetric(float64(h.P99.Microseconds()), "hub-p99-µs")
	b.ReportMetric(float64(m.P99.Microseconds()), "mosq-p99-µs")
	b.ReportMetric(float64(h.P50.Microseconds()), "hub-p50-µs")
	b.ReportMetric(float64(h.RSS), "hub-rss-KiB")
	b.ReportMetric(float64(m.RSS), "mosq-rss-KiB")
	b.ReportMetric(h.lostPct(), "hub-lost-%")
	b.ReportMetric(m.lostPct(), "mosq-lost-%")
	if os.Getenv("LEDGE_BENCH_VERBOSE") != "" {
		for i := range mq {
			b.Logf("round %d: mosquitto sent %d received %d rate %.0f cpu %v gen %v | hub sent %d received %d rate %.0f cpu %v gen %v", i,
				mq[i].Sent, mq[i].Received, mq[i].Rate, mq[i].CPU, mq[i].GenCPU, hb[i].Sent, hb[i].Received, hb[i].Rate, hb[i].CPU, hb[i].GenCPU)
		}
	}
}

func mean(rs []loadResult) loadResult {
	var out loadResult
	var cpu time.Duration
	for _, r := range rs {
		out.Sent += r.Sent
		out.Received += r.Received
		out.Want += r.Want
		out.Rate += r.Rate / float64(len(rs))
		out.P50 += r.P50 / time.Duration(len(rs))
		out.P99 += r.P99 / time.Duration(len(rs))
		cpu += r.CPU
		out.GenCPU += r.GenCPU
		out.RSS = max(out.RSS, r.RSS)
	}
	out.CPU = cpu
	return out
}

// BenchmarkStoreAndForward: QoS 1 messages through a route into a module
// input (persisted before PUBACK, batched commits, delivered from the
// queue) against mosquitto's plain QoS 1 1->1 rate, interleaved.
func BenchmarkStoreAndForward(b *testing.B) {
	bb := startBenchBrokers(b, map[string]RouteConfig{
		"toSink": {Route: `FROM /messages/modules/cam/* INTO BrokeredEndpoint("/modules/sink/inputs/in")`},
	})
	for _, pubs := range []int{1, 10} {
		b.Run(fmt.Sprintf("%dx1-q1", pubs), func(b *testing.B) {
			mqLoad := load{Pubs: pubs, Subs: 1, QoS: 1, Duration: 2 * time.Second, Topic: "bench/sf", Filter: "bench/sf"}
			hubLoad := load{Pubs: pubs, Subs: 1, QoS: 1, Duration: 2 * time.Second,
				Topic:  "devices/" + testDevice + "/modules/cam/messages/events/",
				Filter: "devices/" + testDevice + "/modules/sink/inputs/#",
				SubID:  func(int) string { return testDevice + "/sink" },
				PubID:  func(i int) string { return fmt.Sprintf("%s/cam-%d", testDevice, i) },
			}
			var mq, hb []loadResult
			for b.Loop() {
				r1, err := runLoad(bb.mqURL, bb.mqPID, mqLoad)
				if err != nil {
					b.Fatal(err)
				}
				r2, err := runLoad(bb.hubURL, bb.hubPID, hubLoad)
				if err != nil {
					b.Fatal(err)
				}
				mq, hb = append(mq, r1), append(hb, r2)
			}
			reportPair(b, mq, hb)
		})
	}
}

// BenchmarkInlineWrites measures the patched mochi's inline writes: two
// hub children, one with them off (LEDGE_HUB_INLINE_WRITES=0), the same
// loads interleaved; it reports the CPU per message and the delivered
// rate with inline writes over without (CPU below 1: a saving).
func BenchmarkInlineWrites(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Listen = ListenConfig{MQTT: "127.0.0.1:0"}
	on := startChild(b, childSpec{Dir: b.TempDir(), Dev: true, Config: cfg})
	b.Setenv("LEDGE_HUB_CHILD_ENV", "LEDGE_HUB_INLINE_WRITES=0")
	off := startChild(b, childSpec{Dir: b.TempDir(), Dev: true, Config: cfg})
	for _, l := range []load{
		{Name: "1x1-q0-paced", Pubs: 1, Subs: 1, QoS: 0, Rate: 5000},
		{Name: "1x1-q1-paced", Pubs: 1, Subs: 1, QoS: 1, Rate: 5000},
		{Name: "1x10-q0-paced", Pubs: 1, Subs: 10, QoS: 0, Rate: 1000},
		{Name: "1x10-q0-sat", Pubs: 1, Subs: 10, QoS: 0},
		{Name: "1x1-q1-sat", Pubs: 1, Subs: 1, QoS: 1},
	} {
		l.Duration, l.Topic, l.Filter = 2*time.Second, "ab", "ab"
		b.Run(l.Name, func(b *testing.B) {
			var a, q []loadResult
			for b.Loop() {
				r1, err := runLoad(fmt.Sprintf("tcp://127.0.0.1:%d", on.port), on.pid, l)
				if err != nil {
					b.Fatal(err)
				}
				r2, err := runLoad(fmt.Sprintf("tcp://127.0.0.1:%d", off.port), off.pid, l)
				if err != nil {
					b.Fatal(err)
				}
				a, q = append(a, r1), append(q, r2)
			}
			ma, mq := mean(a), mean(q)
			b.ReportMetric(ma.cpuPerMsg()/mq.cpuPerMsg(), "cpu-inline/queued")
			b.ReportMetric(ma.Rate/mq.Rate, "rate-inline/queued")
			b.ReportMetric(ma.cpuPerMsg(), "inline-cpu-µs/msg")
			b.ReportMetric(mq.cpuPerMsg(), "queued-cpu-µs/msg")
		})
	}
}

// BenchmarkHubAB compares two builds of the hub on the same loads: a
// child of this test binary (A) and one of the test binary named by
// LEDGE_HUB_AB_BASE (B: e.g. built from main with `go test -c -o
// /tmp/base.test ./hub`), interleaved round by round in alternating
// order. It reports A/B ratios of CPU per message and delivered rate.
// LEDGE_HUB_AB_ENV and LEDGE_HUB_AB_BASE_ENV add environment to A's and
// B's child only (e.g. the same binary twice, GOGC=200 against nothing).
// Without LEDGE_HUB_AB_BASE it is skipped.
func BenchmarkHubAB(b *testing.B) {
	base := os.Getenv("LEDGE_HUB_AB_BASE")
	if base == "" {
		b.Skip("LEDGE_HUB_AB_BASE names no test binary to compare with")
	}
	cfg := DefaultConfig()
	cfg.Listen = ListenConfig{MQTT: "127.0.0.1:0"}
	env := os.Getenv("LEDGE_HUB_CHILD_ENV")
	b.Setenv("LEDGE_HUB_CHILD_ENV", env+" "+os.Getenv("LEDGE_HUB_AB_ENV"))
	a := startChild(b, childSpec{Dir: b.TempDir(), Dev: true, Config: cfg})
	b.Setenv("LEDGE_HUB_CHILD_ENV", env+" "+os.Getenv("LEDGE_HUB_AB_BASE_ENV"))
	b.Setenv("LEDGE_HUB_CHILD_BIN", base)
	bb := startChild(b, childSpec{Dir: b.TempDir(), Dev: true, Config: cfg})
	for _, l := range []load{
		{Name: "1x1-q0-sat", Pubs: 1, Subs: 1, QoS: 0},
		{Name: "1x1-q0-paced", Pubs: 1, Subs: 1, QoS: 0, Rate: 5000},
		{Name: "1x1-q1-sat", Pubs: 1, Subs: 1, QoS: 1},
		{Name: "1x1-q1-paced", Pubs: 1, Subs: 1, QoS: 1, Rate: 5000},
		{Name: "1x10-q0-sat", Pubs: 1, Subs: 10, QoS: 0},
	} {
		l.Duration, l.Topic, l.Filter = 2*time.Second, "ab/"+l.Name, "ab/"+l.Name
		b.Run(l.Name, func(b *testing.B) {
			var ra, rb []loadResult
			run := func(c *child) loadResult {
				r, err := runLoad(fmt.Sprintf("tcp://127.0.0.1:%d", c.port), c.pid, l)
				if err != nil {
					b.Fatal(err)
				}
				return r
			}
			i := 0
			for b.Loop() {
				if i%2 == 0 {
					ra = append(ra, run(a))
					rb = append(rb, run(bb))
				} else {
					rb = append(rb, run(bb))
					ra = append(ra, run(a))
				}
				i++
			}
			ma, mb := mean(ra), mean(rb)
			b.ReportMetric(ma.cpuPerMsg()/mb.cpuPerMsg(), "cpu-A/B")
			b.ReportMetric(ma.Rate/mb.Rate, "rate-A/B")
			b.ReportMetric(ma.cpuPerMsg(), "A-cpu-µs/msg")
			b.ReportMetric(mb.cpuPerMsg(), "B-cpu-µs/msg")
			b.ReportMetric(ma.lostPct(), "A-lost-%")
			b.ReportMetric(mb.lostPct(), "B-lost-%")
		})
	}
}
