package pipeline

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"gocv.io/x/gocv"

	"ledge/internal/testenv"
)

// startMosquitto runs a real mosquitto on a free loopback port until the
// test ends and returns its address.
func startMosquitto(t *testing.T) string {
	t.Helper()
	bin := testenv.Command(t, "mosquitto", "mosquitto")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(t.TempDir(), "mosquitto.conf")
	os.WriteFile(conf, []byte("listener "+port+" 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type error\n"), 0o600)
	cmd := exec.Command(bin, "-c", conf)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start mosquitto: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitFor(t, 5*time.Second, "mosquitto to listen", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return addr
}

// TestActions runs the pan video with webhook, mqtt, snapshot and log
// actions on zone.enter and checks each delivered, the webhook after a
// retry, and that the snapshot byte limit deleted the oldest snapshots.
func TestActions(t *testing.T) {
	// Webhook: the first request fails with 500.
	var (
		mu       sync.Mutex
		hookHits int
		hookBody []Event
	)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		hookHits++
		if hookHits == 1 {
			http.Error(w, "not now", http.StatusInternalServerError)
			return
		}
		var e Event
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &e); err != nil || r.Header.Get("Content-Type") != "application/json" || r.Header.Get("X-Token") != "s3cret" {
			t.Errorf("webhook got %s (%v), headers %v", b, err, r.Header)
		}
		hookBody = append(hookBody, e)
	}))
	defer hook.Close()

	// MQTT: a subscriber on a real mosquitto.
	broker := startMosquitto(t)
	db := testenv.DB(t)
	base := settledGoroutines() // the database's opener and the webhook server included
	got := make(chan Event, 100)
	sub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + broker).SetClientID("test-sub"))
	if tok := sub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	defer sub.Disconnect(100)
	tok := sub.Subscribe("site/#", 1, func(_ mqtt.Client, m mqtt.Message) {
		var e Event
		if err := json.Unmarshal(m.Payload(), &e); err != nil {
			t.Errorf("mqtt payload %s: %v", m.Payload(), err)
		}
		if want := "site/actions/" + e.Type + "/" + e.Zone; m.Topic() != want {
			t.Errorf("topic %s, want %s", m.Topic(), want)
		}
		got <- e
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}

	spec := panSpec(t, "actions")
	spec.Actions = []ActionSpec{
		{Type: "webhook", URL: hook.URL + "/hook", On: []string{ZoneEnter}, Backoff: 10 * time.Millisecond, Headers: map[string]string{"X-Token": "s3cret"}},
		{Type: "mqtt", URL: "tcp://" + broker, Topic: "site/{pipeline}/{type}/{zone}", QoS: 1, On: []string{ZoneEnter}},
		{Type: "snapshot", On: []string{ObjectEnter, ZoneEnter}},
		{Type: "log", On: []string{ObjectLeave}},
	}
	var snapLimit int64 = 200_000
	e := newTestEngine(t, []Spec{spec}, func(o *Options) { o.DB = db; o.Config.EventLog.MaxSnapshotBytes = snapLimit })
	stop := run(t, e)
	waitFor(t, 60*time.Second, "the video to end", func() bool {
		s, _ := e.PipelineStats("actions")
		return s.Source.Phase == "ended" && s.FramesOut == 125
	})
	// zone.enter events, from the log.
	zoneEnters, err := e.EventLog().Query(t.Context(), Query{Pipeline: "actions", Type: ZoneEnter})
	if err != nil || len(zoneEnters) < 2 {
		t.Fatalf("%d zone.enter events (%v), want 2+", len(zoneEnters), err)
	}
	waitFor(t, 10*time.Second, "mqtt and webhook deliveries", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= len(zoneEnters) && len(hookBody) >= len(zoneEnters)
	})
	stop()
	hook.CloseClientConnections()
	sub.Disconnect(100)
	if n := settledGoroutines(); n > base {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines after stopping, %d before: leaked\n%s", n, base, buf[:runtime.Stack(buf, true)])
	}
	st, _ := e.PipelineStats("actions")
	byName := map[string]ActionStats{}
	for _, a := range st.Actions {
		byName[a.Name] = a
	}
	if w := byName["webhook-0"]; w.Retries < 1 || w.Delivered != uint64(len(zoneEnters)) || w.Failed != 0 || w.LastError == "" {
		t.Errorf("webhook stats %+v: want one retry after the 500 and %d delivered", w, len(zoneEnters))
	}
	if m := byName["mqtt-1"]; m.Delivered != uint64(len(zoneEnters)) {
		t.Errorf("mqtt stats %+v, want %d delivered", m, len(zoneEnters))
	}
	for range len(zoneEnters) {
		if ev := <-got; ev.Type != ZoneEnter || ev.Pipeline != "actions" || ev.Class != "person" || ev.TrackID == 0 {
			t.Errorf("mqtt event %+v", ev)
		}
	}
	if l := st.Latency[StageCaptureToAction]; l.Count == 0 || l.P50 <= 0 {
		t.Errorf("capture-to-action latency %+v: want samples", l)
	}

	// Snapshots: the newest exist and show boxes; the oldest were deleted
	// to keep the total under the limit.
	all, _ := e.EventLog().Query(t.Context(), Query{Pipeline: "actions", Limit: 1000})
	var kept, gone int
	var total int64
	for _, ev := range all {
		if ev.Type != ObjectEnter && ev.Type != ZoneEnter {
			continue
		}
		if ev.Snapshot == "" {
			gone++
			continue
		}
		kept++
		p, err := e.EventLog().SnapshotPath(ev.Snapshot)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("snapshot of event %d: %v", ev.ID, err)
			continue
		}
		total += fi.Size()
		checkBoxDrawn(t, p, ev.Box)
		if gone > 0 {
			t.Errorf("event %d has its snapshot but an older one lost it: retention is not oldest first", ev.ID)
		}
	}
	if kept == 0 || gone == 0 {
		t.Errorf("%d snapshots kept, %d deleted: want both (limit %d bytes)", kept, gone, snapLimit)
	}
	if total > snapLimit || e.EventLog().SnapshotBytes() != total {
		t.Errorf("snapshots take %d bytes (log counts %d), limit %d", total, e.EventLog().SnapshotBytes(), snapLimit)
	}
	files, _ := filepath.Glob(filepath.Join(e.EventLog().SnapshotDir(), "actions", "*", "*.jpg"))
	if len(files) != kept {
		t.Errorf("%d snapshot files on disk, the log refers to %d", len(files), kept)
	}
}

// checkBoxDrawn checks that the left edge of box in the JPEG at path is
// drawn in the person colour (red).
func checkBoxDrawn(t *testing.T, path string, b Box) {
	t.Helper()
	img := gocv.IMRead(path, gocv.IMReadColor)
	defer img.Close()
	if img.Empty() {
		t.Errorf("%s: not a JPEG", path)
		return
	}
	var r, g, bl, n int
	x := int(b.X1)
	for y := int(b.Y1) + 20; y < int(b.Y2)-20; y++ {
		v := img.GetVecbAt(y, x)
		bl, g, r, n = bl+int(v[0]), g+int(v[1]), r+int(v[2]), n+1
	}
	if n == 0 || r/n < 180 || g/n > 120 || bl/n > 120 {
		t.Errorf("%s: the box edge at x=%d is not drawn in red (mean BGR %d,%d,%d)", path, x, bl/max(n, 1), g/max(n, 1), r/max(n, 1))
	}
}

var _ = fmt.Sprint

// TestActionFailureLoggedOnce: an action whose target is down (a webhook
// that answers 503) fails event after event; the log says so once (WARN
// "action failing" with the reason), not once per event, the action's
// stats say it is failing and since when; when the target answers again
// the log says so once (INFO "action recovered") and the stats clear.
func TestActionFailureLoggedOnce(t *testing.T) {
	var (
		mu   sync.Mutex
		down = true
	)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if down {
			http.Error(w, "maintenance", http.StatusServiceUnavailable)
		}
	}))
	defer hook.Close()
	logs := &syncBuffer{}
	spec := panSpec(t, "hooked")
	spec.Source.Loop = true
	spec.Actions = []ActionSpec{{Type: "webhook", URL: hook.URL + "/hook", On: []string{TrackStart, TrackEnd}, Retries: -1}}
	e := newTestEngine(t, []Spec{spec}, func(o *Options) {
		o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	run(t, e)
	webhook := func() ActionStats {
		s, _ := e.PipelineStats("hooked")
		for _, a := range s.Actions {
			if a.Type == "webhook" {
				return a
			}
		}
		return ActionStats{}
	}
	waitFor(t, 60*time.Second, "three failed events", func() bool { return webhook().Failed >= 3 })
	if n := logs.count("level=WARN"); n != 1 || logs.count(`msg="action failing"`) != 1 || logs.count("503") == 0 {
		t.Errorf("%d WARN lines for a webhook that fails %d events, want 1 (action failing, with the answer):\n%s", n, webhook().Failed, logs)
	}
	if a := webhook(); !a.Failing || a.FailingSince.IsZero() || !strings.Contains(a.LastError, "503") {
		t.Errorf("webhook stats %+v: want failing, since when, and the answer", a)
	}
	mu.Lock()
	down = false
	mu.Unlock()
	waitFor(t, 60*time.Second, "a delivery after the target is back", func() bool { return webhook().Delivered >= 1 })
	if a := webhook(); a.Failing || !a.FailingSince.IsZero() {
		t.Errorf("webhook stats %+v after a delivery: want not failing", a)
	}
	if n := logs.count(`msg="action recovered"`); n != 1 || logs.count("level=WARN") != 1 {
		t.Errorf("%d INFO lines for the recovery, want 1; log:\n%s", n, logs)
	}
}
