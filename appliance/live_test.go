package appliance

import (
	"encoding/binary"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// liveFrame is one frame of the live feed, as a page reads it.
type liveFrame struct {
	Pipeline string `json:"pipeline"`
	Seq      uint64 `json:"seq"`
	jpeg     []byte
}

// liveReader reads a live feed in the background (a read deadline would
// break a gorilla connection for good).
type liveReader struct {
	msgs chan liveMsg
}

type liveMsg struct {
	kind int
	data []byte
}

func newLiveReader(ws *websocket.Conn) *liveReader {
	r := &liveReader{msgs: make(chan liveMsg, 1024)}
	go func() {
		defer close(r.msgs)
		for {
			kind, data, err := ws.ReadMessage()
			if err != nil {
				return
			}
			r.msgs <- liveMsg{kind, data}
		}
	}()
	return r
}

// read collects the frames and text notes that arrive within d.
func (r *liveReader) read(t *testing.T, d time.Duration) (frames []liveFrame, notes []map[string]string) {
	t.Helper()
	end := time.After(d)
	for {
		var m liveMsg
		var ok bool
		select {
		case <-end:
			return frames, notes
		case m, ok = <-r.msgs:
			if !ok {
				t.Fatal("live feed closed")
			}
		}
		if m.kind == websocket.TextMessage {
			var n map[string]string
			if err := json.Unmarshal(m.data, &n); err != nil {
				t.Fatalf("live feed text %q: %v", m.data, err)
			}
			notes = append(notes, n)
			continue
		}
		data := m.data
		if len(data) < 2 {
			t.Fatalf("live frame of %d bytes", len(data))
		}
		hl := int(binary.BigEndian.Uint16(data))
		var f liveFrame
		if err := json.Unmarshal(data[2:2+hl], &f); err != nil {
			t.Fatalf("live frame header %q: %v", data[2:2+hl], err)
		}
		f.jpeg = data[2+hl:]
		if len(f.jpeg) < 100 || f.jpeg[0] != 0xFF || f.jpeg[1] != 0xD8 {
			t.Fatalf("live frame of %s is not a JPEG (%d bytes)", f.Pipeline, len(f.jpeg))
		}
		frames = append(frames, f)
	}
}

// TestLiveFeed: one WebSocket carries the frames of several pipelines, each
// at the rate the page asked for; an unknown pipeline gets an error that
// names it while the others go on; a new watch set replaces the old one.
func TestLiveFeed(t *testing.T) {
	d := startDashboard(t, nil)
	api := pipelinesAPI{eng: d.app.pipelines, set: d.app.pipelineSet}
	for _, name := range []string{"slow", "fast"} {
		if _, err := api.Put(t.Context(), "", []byte("name: "+name+"\nsource: {url: \"testpattern:\", fps: 25, width: 320, height: 180}\n")); err != nil {
			t.Fatal(err)
		}
	}
	tok := apiToken(t, d)
	h := http.Header{"Authorization": {"Bearer " + tok}}
	url := "ws" + strings.TrimPrefix(d.base, "http") + "/api/v1/live"
	ws, resp, err := websocket.DefaultDialer.Dial(url, h)
	if err != nil {
		t.Fatalf("dial %s: %v (%v)", url, err, resp)
	}
	defer ws.Close()
	if err := ws.WriteJSON(map[string]any{"watch": map[string]float64{"slow": 1, "fast": 0, "ghost": 1}}); err != nil {
		t.Fatal(err)
	}
	live := newLiveReader(ws)
	frames, notes := live.read(t, 3*time.Second)
	n := map[string]int{}
	for _, f := range frames {
		n[f.Pipeline]++
	}
	t.Logf("in 3 s: %v", n)
	if len(notes) != 1 || notes[0]["pipeline"] != "ghost" || !strings.Contains(notes[0]["message"], "ghost") {
		t.Errorf("notes %v, want one error naming ghost", notes)
	}
	if n["slow"] < 1 || n["slow"] > 5 || n["fast"] < 3*n["slow"] {
		t.Errorf("frames in 3 s: %v; want slow at about 1 a second and fast at watchFps", n)
	}

	// A new set replaces the old: only fast from now on.
	if err := ws.WriteJSON(map[string]any{"watch": map[string]float64{"fast": 2}}); err != nil {
		t.Fatal(err)
	}
	live.read(t, 300*time.Millisecond) // what was on its way
	frames, _ = live.read(t, 2*time.Second)
	n = map[string]int{}
	for _, f := range frames {
		n[f.Pipeline]++
	}
	if n["slow"] != 0 || n["fast"] < 2 || n["fast"] > 6 {
		t.Errorf("after watching fast at 2 fps only: %v", n)
	}
	waitUntil(t, 5*time.Second, "the slow pipeline's viewer to go", func() bool {
		st, _ := d.app.pipelines.PipelineStats("slow")
		return st.Watchers == 0
	})

	// Garbage gets a note, not a closed connection.
	ws.WriteMessage(websocket.TextMessage, []byte(`{"watch": [1, 2]}`))
	_, notes = live.read(t, time.Second)
	if len(notes) == 0 || !strings.Contains(notes[0]["message"], "watch") {
		t.Errorf("a malformed request got %v", notes)
	}

	// Closing the socket ends the watches.
	ws.Close()
	waitUntil(t, 5*time.Second, "the viewers to go", func() bool {
		st, _ := d.app.pipelines.PipelineStats("fast")
		return st.Watchers == 0
	})

	// Another site's page may not open the feed with the operator's cookie.
	h.Set("Origin", "http://evil.example")
	if _, resp, err := websocket.DefaultDialer.Dial(url, h); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-origin dial: %v, %v; want 403", err, resp)
	}
}
