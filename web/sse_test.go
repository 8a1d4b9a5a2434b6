package web

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"ledge/internal/testenv"
)

func TestEventStream(t *testing.T) {
	b := NewBroadcaster()
	db := testenv.DB(t)
	s, err := New(Options{Listen: "127.0.0.1:0", DB: db, Events: b})
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := CreateToken(t.Context(), db, "sse")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer cancel()

	req, _ := http.NewRequestWithContext(t.Context(), "GET", "http://"+s.Addr().String()+"/api/v1/events/stream?types=detection", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
	}
	for b.Subscribers() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	b.Publish(Event{Type: "pipeline.state", Data: map[string]string{"skip": "me"}})
	b.Publish(Event{Type: "detection", Data: map[string]any{"label": "person", "score": 0.9}})
	rd := bufio.NewReader(resp.Body)
	var got []string
	for len(got) < 2 {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(line, "event:") || strings.HasPrefix(line, "data:") {
			got = append(got, strings.TrimSpace(line))
		}
	}
	if got[0] != "event: detection" || !strings.Contains(got[1], `"label":"person"`) {
		t.Errorf("got %q", got)
	}
	// Stopping the server ends the stream, and the server stops promptly.
	cancel()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("server did not stop with an open event stream")
	}
	for {
		if _, err := rd.ReadString('\n'); err != nil {
			break // the stream ended
		}
	}
}

func TestBroadcasterDropsForSlowSubscriber(t *testing.T) {
	b := NewBroadcaster()
	slow, dropped, cancel := b.Subscribe(2)
	fast, _, cancelFast := b.Subscribe(100)
	for i := range 10 {
		b.Publish(Event{Type: "x", Data: i})
	}
	if len(slow) != 2 || dropped() != 8 || len(fast) != 10 {
		t.Errorf("slow %d dropped %d fast %d", len(slow), dropped(), len(fast))
	}
	cancel()
	cancel() // twice is fine
	cancelFast()
	if b.Subscribers() != 0 {
		t.Error("subscribers left")
	}
	b.Publish(Event{Type: "after"}) // no panic on closed channels
}
