package pipeline

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	ort "github.com/yalue/onnxruntime_go"
	"gocv.io/x/gocv"

	"ledge/inference"
	"ledge/internal/testenv"
	"ledge/pipeline/source"
)

// The benchmarks compare the engine with work done without it, in the same
// run and interleaved, so both see the same machine load:
//
//   - BenchmarkPipelineThroughput: two pipelines (one per core) each read
//     the 720p H.264 video through YOLOX-nano (2 sessions x 1 thread,
//     shared), against a minimal loop written here that does the same work
//     (gocv decode, letterbox + run + decode via inference.Detector, same
//     session layout) in two goroutines, and against bare session.Run
//     throughput with the same layout. Reports engine/loop, engine/run and
//     the capture-to-result latency.
//   - BenchmarkPipelineLatency: one pipeline reading the same video at its
//     own 25 fps (a camera) with an action on every event, for the
//     capture-to-action and capture-to-result latency p50/p99.
//   - BenchmarkMotionGateCPU: a still video through YOLOX-nano with and
//     without the motion gate; reports the process CPU time of each and
//     the reduction (goal >= 5x).

const benchSessions, benchThreads = 2, 1

func benchEngine(b *testing.B, specs []Spec) *Engine {
	b.Helper()
	cfg := DefaultConfig()
	cfg.SnapshotDir = b.TempDir()
	cfg.Detector = DetectorConfig{Sessions: benchSessions, Threads: benchThreads}
	e, err := NewEngine(context.Background(), Options{Config: cfg, Library: testenv.ORTLib(b)}, specs)
	if err != nil {
		b.Fatal(err)
	}
	return e
}

// runToEnd runs the engine until every pipeline's finite source ended and
// its frames are processed; it returns the wall time and the stats. It
// waits for the sources' "ended" events rather than polling the stats,
// whose percentiles cost CPU.
func runToEnd(b *testing.B, e *Engine) (time.Duration, []Stats) {
	b.Helper()
	sub := e.Subscribe(1024)
	defer sub.Cancel()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	t0 := time.Now()
	go func() { done <- e.Run(ctx) }()
	ended := map[string]bool{}
	for len(ended) < len(e.Specs()) {
		ev := <-sub.C
		if ev.Type == SourceState && ev.Source.Phase == source.PhaseEnded {
			ended[ev.Pipeline] = true
		}
	}
	for {
		all := 0
		for _, s := range e.Stats() {
			if s.FramesOut+s.Dropped == s.FramesIn {
				all++
			}
		}
		if all == len(ended) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	d := time.Since(t0)
	cancel()
	<-done
	return d, e.Stats()
}

// minimalLoop decodes path with gocv and detects every frame with det in
// each of n goroutines; it returns the frames processed and the time.
func minimalLoop(b *testing.B, det *inference.Detector, path string, n int) (int, time.Duration) {
	b.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	frames := 0
	t0 := time.Now()
	for range n {
		wg.Go(func() {
			vc, err := gocv.VideoCaptureFileWithAPI(path, gocv.VideoCaptureFFmpeg)
			if err != nil {
				b.Error(err)
				return
			}
			defer vc.Close()
			m := gocv.NewMat()
			defer m.Close()
			k := 0
			for vc.Read(&m) && !m.Empty() {
				if _, err := det.Detect(m, inference.Params{MinScore: 0.3}); err != nil {
					b.Error(err)
					return
				}
				k++
			}
			mu.Lock()
			frames += k
			mu.Unlock()
		})
	}
	wg.Wait()
	return frames, time.Since(t0)
}

// bareRun measures session.Run throughput on a ready tensor with the same
// layout: one session per goroutine, benchSessions of them, for d.
func bareRun(b *testing.B, model string, d time.Duration) float64 {
	b.Helper()
	ins, outs, err := ort.GetInputOutputInfo(model)
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	runs := 0
	start := time.Now()
	for range benchSessions {
		so, _ := ort.NewSessionOptions()
		so.SetIntraOpNumThreads(benchThreads)
		so.SetInterOpNumThreads(1)
		sess, err := ort.NewDynamicAdvancedSession(model, []string{ins[0].Name}, []string{outs[0].Name}, so)
		so.Destroy()
		if err != nil {
			b.Fatal(err)
		}
		in, _ := ort.NewEmptyTensor[float32](ins[0].Dimensions)
		out, _ := ort.NewEmptyTensor[float32](outs[0].Dimensions)
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			defer sess.Destroy()
			defer in.Destroy()
			defer out.Destroy()
			k := 0
			for time.Since(start) < d {
				if err := sess.Run([]ort.Value{in}, []ort.Value{out}); err != nil {
					b.Error(err)
					return
				}
				k++
			}
			mu.Lock()
			runs += k
			mu.Unlock()
		})
	}
	wg.Wait()
	return float64(runs) / time.Since(start).Seconds()
}

func BenchmarkPipelineThroughput(b *testing.B) {
	model := testenv.Model(b, "yolox_nano.onnx")
	path := video(b, hdVideo)
	rt, err := inference.Open(testenv.ORTLib(b))
	if err != nil {
		b.Fatal(err)
	}
	defer rt.Close()
	det, err := rt.NewDetector(model, inference.Options{Sessions: benchSessions, Threads: benchThreads})
	if err != nil {
		b.Fatal(err)
	}
	defer det.Close()
	spec := func(name string) Spec {
		return Spec{Name: name, Source: source.Spec{URL: "file:" + path},
			Detect: &DetectSpec{Model: model, Threshold: 0.3}, Actions: []ActionSpec{{Type: "log", Level: "debug"}}}
	}
	var engFrames, loopFrames int
	var engTime, loopTime time.Duration
	var runRate float64
	var c2r []Latency
	for b.Loop() {
		// Two rounds per iteration, interleaved, to even out the noise.
		for range 2 {
			e := benchEngine(b, []Spec{spec("cam1"), spec("cam2")})
			d, stats := runToEnd(b, e)
			engTime += d
			for _, s := range stats {
				engFrames += int(s.FramesOut)
				c2r = append(c2r, s.Latency[StageCaptureToResult])
			}
			n, d := minimalLoop(b, det, path, 2)
			loopFrames += n
			loopTime += d
		}
		runRate += bareRun(b, model, time.Second)
	}
	eng := float64(engFrames) / engTime.Seconds()
	loop := float64(loopFrames) / loopTime.Seconds()
	run := runRate / float64(b.N)
	b.ReportMetric(eng, "engine-fps")
	b.ReportMetric(loop, "loop-fps")
	b.ReportMetric(run, "run/s")
	b.ReportMetric(eng/loop, "engine/loop")
	b.ReportMetric(eng/run, "engine/run")
	var p50, p99 time.Duration
	for _, l := range c2r {
		p50, p99 = max(p50, l.P50), max(p99, l.P99)
	}
	b.ReportMetric(float64(p50.Microseconds())/1000, "c2r-p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "c2r-p99-ms")
}

func BenchmarkPipelineLatency(b *testing.B) {
	model := testenv.Model(b, "yolox_nano.onnx")
	path := video(b, hdVideo)
	var c2a, c2r []Latency
	for b.Loop() {
		e := benchEngine(b, []Spec{{Name: "live", Source: source.Spec{URL: "file:" + path, Realtime: true},
			Detect:  &DetectSpec{Model: model, Threshold: 0.3},
			Tracker: TrackerSpec{MinFrames: 1, IoU: 0.9, Distance: 0.01}, // many short tracks: many events
			Actions: []ActionSpec{{Type: "log", Level: "debug"}}}})
		_, stats := runToEnd(b, e)
		c2a = append(c2a, stats[0].Latency[StageCaptureToAction])
		c2r = append(c2r, stats[0].Latency[StageCaptureToResult])
	}
	rep := func(ls []Latency, unit string) {
		var p50, p99 time.Duration
		var n uint64
		for _, l := range ls {
			p50, p99, n = max(p50, l.P50), max(p99, l.P99), n+l.Count
		}
		b.ReportMetric(float64(p50.Microseconds())/1000, unit+"-p50-ms")
		b.ReportMetric(float64(p99.Microseconds())/1000, unit+"-p99-ms")
		b.ReportMetric(float64(n)/float64(b.N), unit+"-samples")
	}
	rep(c2a, "c2a")
	rep(c2r, "c2r")
}

// cpuTime is the process's user + system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkMotionGateCPU(b *testing.B) {
	model := testenv.Model(b, "yolox_nano.onnx")
	path := video(b, stillVideo)
	spec := func(gate bool) Spec {
		s := Spec{Name: "still", Source: source.Spec{URL: "file:" + path},
			Detect: &DetectSpec{Model: model, Threshold: 0.3, Sessions: 1, Threads: 1}}
		if gate {
			s.Motion = &MotionSpec{Hold: 100 * time.Millisecond}
		}
		return s
	}
	var with, without time.Duration
	var detected, skipped uint64
	for b.Loop() {
		for _, gate := range []bool{false, true} {
			e := benchEngine(b, []Spec{spec(gate)})
			c0 := cpuTime()
			_, stats := runToEnd(b, e)
			c := cpuTime() - c0
			if gate {
				with += c
				skipped += stats[0].SkippedMotion
				detected += stats[0].FramesOut - stats[0].SkippedMotion
			} else {
				without += c
			}
		}
	}
	n := float64(b.N)
	b.ReportMetric(float64(without.Milliseconds())/n, "cpu-ms-nogate")
	b.ReportMetric(float64(with.Milliseconds())/n, "cpu-ms-gate")
	b.ReportMetric(float64(without)/float64(with), "cpu-reduction")
	b.ReportMetric(float64(detected)/n, "detected-frames")
	b.ReportMetric(float64(skipped)/n, "skipped-frames")
}

var _ = fmt.Sprint
var _ = os.Getpid
