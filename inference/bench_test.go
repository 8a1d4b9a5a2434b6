package inference

import (
	"strings"
	"testing"
	"time"
)

// The benchmarks compare a full Detect (letterbox, run, decode, NMS; the
// JPEG is decoded beforehand) with a bare session Run on a ready tensor, for
// each shared model, with the default session layout (one session, all
// cores).

var benchModels = []string{"yolox_nano.onnx", "fastestdet.onnx"}

func benchName(model string) string { return strings.TrimSuffix(model, ".onnx") }

func BenchmarkSessionRun(b *testing.B) {
	for _, model := range benchModels {
		b.Run(benchName(model), func(b *testing.B) {
			d := loadDetector(b, model, Options{})
			if _, err := d.Detect(readImage(b, "bus.jpg"), Params{}); err != nil {
				b.Fatal(err)
			}
			s := <-d.slots
			defer func() { d.slots <- s }()
			for b.Loop() {
				if err := s.sess.Run(s.inputs, s.outputs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDetect(b *testing.B) {
	for _, model := range benchModels {
		b.Run(benchName(model), func(b *testing.B) {
			d := loadDetector(b, model, Options{})
			img := readImage(b, "bus.jpg")
			for b.Loop() {
				if _, err := d.Detect(img, Params{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDetectOverhead interleaves one bare Run and one full Detect per
// iteration, so both see the same machine load, and reports their times and
// the ratio detect/run (goal for YOLOX-nano: <= 1.10).
func BenchmarkDetectOverhead(b *testing.B) {
	for _, model := range benchModels {
		b.Run(benchName(model), func(b *testing.B) {
			d := loadDetector(b, model, Options{})
			img := readImage(b, "bus.jpg")
			if _, err := d.Detect(img, Params{}); err != nil {
				b.Fatal(err)
			}
			var run, det time.Duration
			for b.Loop() {
				s := <-d.slots
				t0 := time.Now()
				if err := s.sess.Run(s.inputs, s.outputs); err != nil {
					b.Fatal(err)
				}
				run += time.Since(t0)
				d.slots <- s
				t0 = time.Now()
				if _, err := d.Detect(img, Params{}); err != nil {
					b.Fatal(err)
				}
				det += time.Since(t0)
			}
			n := float64(b.N)
			b.ReportMetric(float64(run.Microseconds())/n/1000, "run-ms")
			b.ReportMetric(float64(det.Microseconds())/n/1000, "detect-ms")
			b.ReportMetric(float64(det)/float64(run), "detect/run")
		})
	}
}
