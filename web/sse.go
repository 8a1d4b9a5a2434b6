package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
)

// Event is one server-sent event: detections, pipeline and module state
// changes, deployment and model progress. Type becomes the SSE event name.
type Event struct {
	Type string    `json:"type"`
	Time time.Time `json:"time"`
	Data any       `json:"data"`
}

// EventFeed is where events come from (appliance merges the components'
// feeds). Subscribe returns a channel of at most buffer pending events
// (when a subscriber is slow, newer events are dropped for it and counted)
// and a cancel func that closes the subscription.
type EventFeed interface {
	Subscribe(buffer int) (events <-chan Event, dropped func() uint64, cancel func())
}

// sseHeartbeat keeps proxies and browsers from closing an idle stream.
const sseHeartbeat = 15 * time.Second

// eventStream serves GET /api/v1/events/stream: server-sent events until
// the client goes away or the server stops. ?types=a,b filters by type.
func (s *Server) eventStream(c *gin.Context) {
	if s.opts.Events == nil {
		writeError(c, http.StatusServiceUnavailable, "unavailable", "no event feed")
		return
	}
	want := map[string]bool{}
	for _, t := range splitList(c.Query("types")) {
		want[t] = true
	}
	events, dropped, cancel := s.opts.Events.Subscribe(256)
	defer cancel()
	h := c.Writer.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	c.Status(http.StatusOK)
	fmt.Fprintf(c.Writer, "retry: 2000\n: ledge events\n\n")
	c.Writer.Flush()

	tick := time.NewTicker(sseHeartbeat)
	defer tick.Stop()
	var reported uint64
	for {
		select {
		case <-c.Request.Context().Done():
			return
		case <-s.stopping:
			return
		case <-tick.C:
			if n := dropped(); n > reported {
				writeSSE(c, Event{Type: "dropped", Time: time.Now(), Data: map[string]uint64{"events": n - reported}})
				reported = n
			}
			fmt.Fprintf(c.Writer, ": keep-alive\n\n")
			c.Writer.Flush()
		case ev, ok := <-events:
			if !ok {
				return
			}
			if len(want) > 0 && !want[ev.Type] {
				continue
			}
			if !writeSSE(c, ev) {
				return
			}
		}
	}
}

func writeSSE(c *gin.Context, ev Event) bool {
	data, err := json.Marshal(ev.Data)
	if err != nil {
		data = []byte(`null`)
	}
	if _, err := fmt.Fprintf(c.Writer, "event: %s\ndata: %s\n\n", ev.Type, data); err != nil {
		return false
	}
	c.Writer.Flush()
	return true
}

func splitList(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			if i > start {
				out = append(out, s[start:i])
			}
			start = i + 1
		}
	}
	return out
}
