package hub

import (
	"encoding/binary"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// load is one run of the load generator: pubs publishers and subs
// subscribers on one topic, unthrottled (rate 0) or paced (rate per
// publisher), each publisher keeping at most window publishes
// outstanding. It is bounded in time and count and talks to loopback only.
type load struct {
	Name     string
	Pubs     int
	Subs     int
	QoS      byte
	Rate     int // msg/s per publisher; 0 = unthrottled
	Duration time.Duration
	Topic    string // publish topic
	Filter   string // subscription filter
	SubID    func(i int) string
	PubID    func(i int) string
}

type loadResult struct {
	Sent, Received uint64
	Want           uint64  // messages that should have arrived: sent x subscribers
	Rate           float64 // delivered msg/s
	P50, P99       time.Duration
	CPU            time.Duration // broker CPU over the run
	GenCPU         time.Duration // the load generator's CPU (this process) over the run
	RSS            int64         // broker RSS mid-run, KiB
}

// lostPct is the share of the messages that never arrived, in percent
// (QoS 0 dropped for a subscriber that fell behind).
func (r loadResult) lostPct() float64 {
	if r.Want == 0 {
		return 0
	}
	return 100 * float64(r.Want-min(r.Received, r.Want)) / float64(r.Want)
}

func (r loadResult) cpuPerMsg() float64 {
	if r.Received == 0 {
		return 0
	}
	return float64(r.CPU.Microseconds()) / float64(r.Received)
}

const (
	payloadSize = 256
	window      = 100
	maxMessages = 3_000_000
)

func runLoad(broker string, pid int, l load) (loadResult, error) {
	if !strings.HasPrefix(broker, "tcp://127.0.0.1:") {
		return loadResult{}, fmt.Errorf("load generator refuses non-loopback broker %s", broker)
	}
	start := time.Now()
	var received atomic.Uint64
	var lastDelivery atomic.Int64 // since start, of the latest message received
	lat := make([]int64, 0, 1<<20)
	var latMu sync.Mutex
	var subs []paho.Client
	defer func() {
		for _, c := range subs {
			c.Disconnect(0)
		}
	}()
	for i := range l.Subs {
		id := fmt.Sprintf("sub-%d-%d", i, time.Now().UnixNano())
		if l.SubID != nil {
			id = l.SubID(i)
		}
		o := paho.NewClientOptions().AddBroker(broker).SetClientID(id).SetAutoReconnect(false).SetCleanSession(true)
		o.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			p := m.Payload()
			if len(p) < 8 {
				return
			}
			now := int64(time.Since(start))
			d := now - int64(binary.LittleEndian.Uint64(p))
			received.Add(1)
			lastDelivery.Store(now)
			latMu.Lock()
			if len(lat) < cap(lat) {
				lat = append(lat, d)
			}
			latMu.Unlock()
		})
		c := paho.NewClient(o)
		if t := c.Connect(); !t.WaitTimeout(5*time.Second) || t.Error() != nil {
			return loadResult{}, fmt.Errorf("subscriber connect: %v", t.Error())
		}
		subs = append(subs, c)
		if t := c.Subscribe(l.Filter, l.QoS, nil); !t.WaitTimeout(5*time.Second) || t.Error() != nil {
			return loadResult{}, fmt.Errorf("subscribe: %v", t.Error())
		}
	}
	var pubs []paho.Client
	defer func() {
		for _, c := range pubs {
			c.Disconnect(0)
		}
	}()
	for i := range l.Pubs {
		id := fmt.Sprintf("pub-%d-%d", i, time.Now().UnixNano())
		if l.PubID != nil {
			id = l.PubID(i)
		}
		c := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID(id).SetAutoReconnect(false))
		if t := c.Connect(); !t.WaitTimeout(5*time.Second) || t.Error() != nil {
			return loadResult{}, fmt.Errorf("publisher connect: %v", t.Error())
		}
		pubs = append(pubs, c)
	}
	cpu0, gen0 := procCPU(pid), selfCPU()
	var sent atomic.Uint64
	var wg sync.WaitGroup
	var rssMid atomic.Int64
	runStart := time.Now()
	deadline := runStart.Add(l.Duration)
	wg.Go(func() {
		time.Sleep(l.Duration / 2)
		rssMid.Store(procRSS(pid))
	})
	for _, c := range pubs {
		wg.Go(func() {
			toks := make(chan paho.Token, window)
			var tw sync.WaitGroup
			tw.Go(func() {
				for t := range toks {
					t.WaitTimeout(10 * time.Second)
				}
			})
			buf := make([]byte, payloadSize)
			for i := 0; ; i++ {
				now := time.Now()
				if now.After(deadline) || sent.Load() >= maxMessages {
					break
				}
				if l.Rate > 0 {
					due := runStart.Add(time.Duration(i) * time.Second / time.Duration(l.Rate))
					if d := due.Sub(now); d > 0 {
						time.Sleep(d)
					}
				}
				binary.LittleEndian.PutUint64(buf, uint64(time.Since(start)))
				msg := make([]byte, payloadSize)
				copy(msg, buf)
				toks <- c.Publish(l.Topic, l.QoS, false, msg)
				sent.Add(1)
			}
			close(toks)
			tw.Wait()
		})
	}
	wg.Wait()
	// Drain: wait until deliveries stop.
	want := sent.Load() * uint64(l.Subs)
	last, idle := received.Load(), time.Now()
	for received.Load() < want && time.Since(idle) < time.Second {
		time.Sleep(20 * time.Millisecond)
		if n := received.Load(); n != last {
			last, idle = n, time.Now()
		}
	}
	// The rate is over the time to the last delivery, not to the end of
	// the drain: when a broker drops messages (QoS 0 to a subscriber that
	// falls behind: the hub and mosquitto both do), the drain waits a
	// second of silence for messages that never come, and that second
	// counted as delivery time (a rate 0.9x for a broker that delivered as
	// fast but dropped some). The loss is reported on its own.
	elapsed := time.Since(runStart)
	if last := time.Duration(lastDelivery.Load()) - runStart.Sub(start); received.Load() > 0 && last > 0 {
		elapsed = last
	}
	res := loadResult{Sent: sent.Load(), Want: want, Received: received.Load(), CPU: procCPU(pid) - cpu0, GenCPU: selfCPU() - gen0, RSS: rssMid.Load()}
	res.Rate = float64(res.Received) / elapsed.Seconds()
	latMu.Lock()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if n := len(lat); n > 0 {
		res.P50 = time.Duration(lat[n/2])
		res.P99 = time.Duration(lat[n*99/100])
	}
	latMu.Unlock()
	return res, nil
}

// procCPU is the user+system CPU time of a process (all its threads,
// living and exited), from /proc/<pid>/stat.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ 100
}

// selfCPU is the user+system CPU time of this process: the load
// generator's clients (and anything else the test binary runs).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procRSS is VmRSS in KiB.
func procRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			n, _ := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			return n
		}
	}
	return 0
}
