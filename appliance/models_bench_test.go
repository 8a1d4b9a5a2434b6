package appliance

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"ledge/internal/testenv"
	"ledge/models"
	"ledge/pipeline"
)

// BenchmarkModelSwap swaps the model of a running pipeline back and forth
// between YOLOX-nano and FastestDet, through the store and the engine as
// a deployment does, and reports per swap:
//
//   - swap-latency-ms: from the store's activation of a ready version to
//     the first frame served by it (load and warm-up included);
//   - gap-ratio: the longest gap between two processed frames from the
//     activation to 10 frames after the switch, over the normal gap (the
//     median gap in the second before the activation or after the switch,
//     whichever model is slower), measured in the same run. Goal <= 1.5;
//   - control-ratio: the same for as many consecutive frames just before
//     the activation, with no swap: the noise floor of gap-ratio on this
//     machine (the longest of N gaps is never the median).
//
// Gaps are between the times the pipeline finished frames
// (Result.Processed), so a slow reader of the results does not count.
// Two sources: "saturated" reads a file as fast as the pipeline takes it
// (both cores busy), "camera" paces it at 25 fps like a camera.
func BenchmarkModelSwap(b *testing.B) {
	for _, mode := range []struct {
		name     string
		realtime bool
	}{{"saturated", false}, {"camera", true}} {
		b.Run(mode.name, func(b *testing.B) { benchSwap(b, mode.realtime) })
	}
}

func benchSwap(b *testing.B, realtime bool) {
	dir := b.TempDir()
	video := panVideo(b, dir)
	db := testenv.DB(b)
	mcfg := models.DefaultConfig()
	mcfg.FileRoots = []string{filepath.Dir(testenv.Model(b, "yolox_nano.onnx"))}
	store, err := models.Open(b.Context(), models.Options{Config: mcfg, DB: db, Dir: filepath.Join(dir, "models"),
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	res := storeResolver{store}
	pcfg := pipeline.DefaultConfig()
	pcfg.SnapshotDir = filepath.Join(dir, "snapshots")
	eng, err := pipeline.NewEngine(b.Context(), pipeline.Options{Config: pcfg, DB: db, Library: testenv.ORTLib(b),
		Models: res, Logger: slog.New(slog.DiscardHandler)}, nil)
	if err != nil {
		b.Fatal(err)
	}
	store.SetActivator(modelActivator{eng})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { store.Run(ctx) })
	wg.Go(func() { eng.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()

	kinds := map[string]string{"yolox_nano.onnx": "yolox", "fastestdet.onnx": "fastestdet"}
	files := []string{"yolox_nano.onnx", "fastestdet.onnx"}
	for i, f := range files {
		path := testenv.Model(b, f)
		sum, _, err := fileSHA(path)
		if err != nil {
			b.Fatal(err)
		}
		sp := models.Spec{Name: "people", Version: fmt.Sprint(i + 1), URL: "file://" + path, SHA256: sum, Kind: kinds[f]}
		if _, err := store.Pull(b.Context(), sp, i == 0); err != nil {
			b.Fatal(err)
		}
	}
	waitFor(b, "both versions ready and 1 active", func() bool {
		m, err := store.Get(b.Context(), "people")
		return err == nil && m.Active == "1" && len(m.Versions) == 2 && m.Versions[0].State == models.StateReady
	})
	spec := pipeline.Spec{Name: "cam", Detect: &pipeline.DetectSpec{Model: "people", Classes: []string{"person"}}}
	spec.Source.URL, spec.Source.Loop, spec.Source.Realtime = "file:"+video, true, realtime
	if err := eng.Put(b.Context(), spec); err != nil {
		b.Fatal(err)
	}
	ch, stopResults, err := eng.Results("cam", 10000)
	if err != nil {
		b.Fatal(err)
	}
	defer stopResults()
	type arrival struct {
		at      time.Time
		version string
	}
	var mu sync.Mutex
	var arrivals []arrival
	go func() {
		for r := range ch {
			mu.Lock()
			arrivals = append(arrivals, arrival{r.Processed, r.Model})
			mu.Unlock()
		}
	}()
	snapshot := func() []arrival {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(arrivals)
	}
	waitFor(b, "a second of frames", func() bool { a := snapshot(); return len(a) > 0 && time.Since(a[0].at) > 1500*time.Millisecond })

	var lat, ratio, controls, worst, normal []float64
	next := "2"
	for b.Loop() {
		t0 := time.Now()
		if _, err := store.Activate(b.Context(), "people", next); err != nil {
			b.Fatal(err)
		}
		var first time.Time
		waitFor(b, "frames on the new version", func() bool {
			n := 0
			for _, a := range snapshot() {
				if a.at.After(t0) && a.version == next {
					if first.IsZero() {
						first = a.at
					}
					n++
				}
			}
			return n > 10 && time.Since(first) > time.Second
		})
		all := snapshot()
		var before, after, during []float64
		var lastSwap time.Time
		for i := 1; i < len(all); i++ {
			gap := all[i].at.Sub(all[i-1].at).Seconds() * 1000
			switch at := all[i].at; {
			case at.After(t0.Add(-time.Second)) && !at.After(t0):
				before = append(before, gap)
			case at.After(t0) && (lastSwap.IsZero() || !at.After(lastSwap)):
				during = append(during, gap)
				if all[i].version == next && lastSwap.IsZero() {
					lastSwap = all[min(i+10, len(all)-1)].at
				}
			case at.After(lastSwap) && at.Before(lastSwap.Add(time.Second)):
				after = append(after, gap)
			}
		}
		base := max(median(before), median(after))
		// The control: as many consecutive gaps with no swap, just before.
		control := before[max(len(before)-len(during), 0):]
		lat = append(lat, first.Sub(t0).Seconds()*1000)
		ratio = append(ratio, slices.Max(during)/base)
		controls = append(controls, slices.Max(control)/base)
		worst = append(worst, slices.Max(during))
		normal = append(normal, base)
		if next == "2" {
			next = "1"
		} else {
			next = "2"
		}
	}
	b.ReportMetric(mean(lat), "swap-latency-ms")
	b.ReportMetric(slices.Max(ratio), "gap-ratio-max")
	b.ReportMetric(mean(ratio), "gap-ratio-mean")
	b.ReportMetric(mean(controls), "control-ratio-mean")
	b.ReportMetric(slices.Max(controls), "control-ratio-max")
	b.ReportMetric(mean(worst), "swap-gap-ms")
	b.ReportMetric(mean(normal), "normal-gap-ms")
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func waitFor(b *testing.B, what string, ok func() bool) {
	b.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			b.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func fileSHA(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil)), n, err
}
