package hub

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"ledge/internal/testenv"
)

// TestDiskFullHeals: the data dir on a 20 MB tmpfs, the upstream down.
// "flood": QoS 1 telemetry until the hub stops acknowledging (the disk
// reserve). "filler": some messages queued, then another file fills the
// disk to the last byte; new messages are refused; the file goes. In both,
// the upstream comes back: the queue drains, the hub is healthy again
// without a restart, and new messages are acknowledged and delivered.
func TestDiskFullHeals(t *testing.T) {
	t.Run("flood", func(t *testing.T) { diskFull(t, false) })
	t.Run("filler", func(t *testing.T) { diskFull(t, true) })
}

func diskFull(t *testing.T, filler bool) {
	dir := testenv.Tmpfs(t, "20m")
	// The database as appliance opens it (auto_vacuum=incremental).
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, "ledge.db")+
		"?_journal_mode=WAL&_synchronous=FULL&_foreign_keys=on&_busy_timeout=10000&_txlock=immediate&_auto_vacuum=incremental")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	mq := newMosquitto(t, "")
	h := runHubOn(t, db, dir, func(c *Config) {
		c.Routes = map[string]RouteConfig{"up": {Route: `FROM /messages/* INTO $upstream`}}
		c.Upstream = UpstreamConfig{Mode: "mqtt", URL: mq.url(), TopicTemplate: "up/{sourceDevice}", KeepAlive: 5 * time.Second}
		c.StoreAndForward.ReserveBytes = 2 << 20
	}, true)

	pubc, err := h.connect(t, "flood", "", "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	body := strings.Repeat("x", 32<<10)
	acked := 0
	fillerPath := filepath.Join(dir, "filler")
	for i := 0; ; i++ {
		if i > 2000 {
			t.Fatal("20 MB tmpfs never filled")
		}
		if filler && i == 100 {
			f, err := os.Create(fillerPath)
			if err != nil {
				t.Fatal(err)
			}
			chunk := make([]byte, 64<<10)
			for {
				if _, err := f.Write(chunk); err != nil {
					break // ENOSPC
				}
			}
			f.Close()
		}
		tok := pubc.Publish("devices/flood/messages/events/", 1, false, fmt.Sprintf("%05d%s", i, body))
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil || !pubc.IsConnectionOpen() {
			break
		}
		acked++
	}
	t.Logf("%d messages acknowledged before the disk was full; stats %+v", acked, h.Stats().Queues)
	if acked < 100 {
		t.Fatalf("only %d acknowledged", acked)
	}
	// The hub still serves.
	if _, err := h.connect(t, "other", "", "", false, nil); err != nil {
		t.Fatalf("hub not serving while the disk is full: %v", err)
	}

	if filler {
		if err := h.Healthy(t.Context()); err == nil {
			t.Error("healthy with the disk full")
		}
		os.Remove(fillerPath) // the space is back
	}

	// The upstream comes back: every acknowledged message arrives.
	got := newReceived()
	mq.start()
	o := paho.NewClientOptions().AddBroker(mq.url()).SetClientID("cloud").SetDefaultPublishHandler(got.handler)
	cloud := paho.NewClient(o)
	mustOK(t, cloud.Connect())
	defer cloud.Disconnect(0)
	mustOK(t, cloud.Subscribe("up/#", 1, nil))
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if st := h.Stats(); len(st.Queues) > 0 && st.Queues[0].Depth == 0 && h.Healthy(t.Context()) == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := h.Healthy(t.Context()); err != nil {
		t.Fatalf("not healthy after the queue drained: %v; queues %+v", err, h.Stats().Queues)
	}
	if st := h.Stats(); st.Queues[0].Depth != 0 {
		t.Fatalf("queue did not drain: %+v", st.Queues)
	}
	// An empty queue means the upstream broker acknowledged every message;
	// the last ones may still be on their way from it to the subscriber.
	seen := map[string]bool{}
	for wait := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		got.mu.Lock()
		for _, m := range got.msgs {
			seen[string(m.Payload()[:5])] = true
		}
		got.mu.Unlock()
		if len(seen) >= acked || time.Now().After(wait) {
			break
		}
	}
	for i := range acked {
		if !seen[fmt.Sprintf("%05d", i)] {
			t.Errorf("acknowledged message %d never arrived upstream (%d arrived)", i, len(seen))
			break
		}
	}

	// New messages are acknowledged and delivered.
	c2, err := h.connect(t, "after", "", "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, c2.Publish("devices/after/messages/events/", 1, false, "after"))
	for {
		m := got.next(t, "a message published after the disk healed")
		if string(m.Payload()) == "after" {
			break
		}
	}
}
