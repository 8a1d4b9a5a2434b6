package pipeline

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"ledge/internal/testenv"
	"ledge/pipeline/source"
)

var (
	videoMu  sync.Mutex
	videoDir string
	videos   = map[string]string{}
)

func TestMain(m *testing.M) {
	if os.Getenv("LEDGE_PIPELINE_CHILD_DB") != "" {
		os.Exit(eventLogChild()) // a child process of TestEventLogSurvivesKill
	}
	code := m.Run()
	if videoDir != "" {
		os.RemoveAll(videoDir)
	}
	os.Exit(code)
}

// Videos made from ../shared/media/bus.jpg with ffmpeg, once per test
// process.
const (
	// panVideo: bus.jpg at 540x720 sliding left and right (by up to 80 px)
	// over a 960x720 black field, 125 frames at 25 fps. The three people
	// YOLOX-nano sees stay apart; two of them (and a fourth, cut off at the
	// photo's edge) stay in the left half, one in the right half.
	panVideo = "pan"
	// stillVideo: the same scene standing still, 100 frames.
	stillVideo = "still"
	// hdVideo: a 1280x720 H.264 pan across bus.jpg, 150 frames, for
	// benchmarks.
	hdVideo = "hd"
)

var videoArgs = map[string][]string{
	panVideo: {"-f", "lavfi", "-i", "color=c=black:s=960x720:r=25:d=5", "-loop", "1", "-i", "BUS",
		"-filter_complex", "[1:v]scale=540:720[img];[0:v][img]overlay=x='100+80*sin(n/12)':y=0:shortest=1,format=yuv420p",
		"-t", "5", "-r", "25"},
	stillVideo: {"-f", "lavfi", "-i", "color=c=black:s=960x720:r=25:d=4", "-loop", "1", "-i", "BUS",
		"-filter_complex", "[1:v]scale=540:720[img];[0:v][img]overlay=x=100:y=0:shortest=1,format=yuv420p",
		"-t", "4", "-r", "25"},
	hdVideo: {"-loop", "1", "-i", "BUS", "-vf", "scale=1280:-2,crop=1280:720:0:'300+n*2',format=yuv420p",
		"-t", "6", "-r", "25"},
}

// video returns the path of a test video, making it on first use.
func video(t testing.TB, name string) string {
	t.Helper()
	videoMu.Lock()
	defer videoMu.Unlock()
	if p, ok := videos[name]; ok {
		return p
	}
	ffmpeg := testenv.Command(t, "ffmpeg", "ffmpeg")
	if videoDir == "" {
		d, err := os.MkdirTemp("", "ledge-pipeline-videos-")
		if err != nil {
			t.Fatal(err)
		}
		videoDir = d
	}
	bus := testenv.Media(t, "bus.jpg")
	out := filepath.Join(videoDir, name+".mp4")
	args := []string{"-loglevel", "error", "-y"}
	for _, a := range videoArgs[name] {
		args = append(args, strings.ReplaceAll(a, "BUS", bus))
	}
	args = append(args, "-c:v", "libx264", "-preset", "veryfast", "-g", "25", out)
	if b, err := exec.Command(ffmpeg, args...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg %s: %v\n%s", name, err, b)
	}
	videos[name] = out
	return out
}

// newTestEngine makes an engine with a fresh database and snapshot dir.
func newTestEngine(t testing.TB, specs []Spec, mod func(*Options)) *Engine {
	t.Helper()
	cfg := DefaultConfig()
	cfg.SnapshotDir = filepath.Join(t.TempDir(), "snapshots")
	cfg.Detector = DetectorConfig{Sessions: 1, Threads: 1}
	opts := Options{Config: cfg, Logger: testLogger(t), Library: testenv.ORTLib(t)}
	if mod != nil {
		mod(&opts)
	}
	if opts.DB == nil {
		opts.DB = testenv.DB(t)
	}
	e, err := NewEngine(t.Context(), opts, specs)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// run runs e until the test ends (or stop is called) and checks that Run
// returns.
func run(t testing.TB, e *Engine) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(15 * time.Second * testenv.Slowdown()):
				buf := make([]byte, 1<<20)
				t.Errorf("Run did not return within 15 s\n%s", buf[:runtime.Stack(buf, true)])
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	timeout *= testenv.Slowdown()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// goroutines returns the number of goroutines once it stops falling.
func settledGoroutines() int {
	n := runtime.NumGoroutine()
	for range 100 {
		time.Sleep(20 * time.Millisecond)
		m := runtime.NumGoroutine()
		if m == n {
			return n
		}
		n = m
	}
	return n
}

type sourceSpecT = source.Spec

// instance is the running instance of the named pipeline (nil if none).
func (e *Engine) instance(name string) *instance {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.running[name]
}
