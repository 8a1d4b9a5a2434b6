package web

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"
)

// The live feed: GET /api/v1/live upgrades to one WebSocket that carries
// the annotated frames of every camera a page shows, so a grid of any size
// holds one connection (browsers allow six HTTP/1.1 connections per host:
// one MJPEG stream per camera starves the seventh and every other request).
//
// The page says what it shows, and how fast, in a text message that
// replaces the previous one:
//
//	{"watch": {"door": 2, "yard": 0}}
//
// (frames a second per pipeline; 0 is the engine's watchFps, which also
// caps every rate). The server answers with one binary message per frame:
// a 2-byte big-endian header length, the header as JSON
// ({"pipeline": "door", "seq": 123, "time": "..."}), then the JPEG. A
// pipeline the page may not watch gets a text message
// {"type": "error", "pipeline": "x", "message": "..."}; the others go on.
//
// Per pipeline the newest frame wins: a slow link gets fewer frames, never
// a queue of old ones.

const (
	liveMaxWatch   = 64       // pipelines one connection may watch
	liveMaxMessage = 16 << 10 // bytes of a text message from the page
	livePing       = 20 * time.Second
	liveWriteWait  = 10 * time.Second
)

var liveUpgrader = websocket.Upgrader{
	ReadBufferSize:  4096,
	WriteBufferSize: 64 << 10,
	// CheckOrigin is gorilla's default: the Origin must be this host, so
	// another site cannot open the feed with the operator's cookie.
}

// liveRequest is a message from the page.
type liveRequest struct {
	Watch map[string]float64 `json:"watch"`
}

// liveHeader precedes each JPEG.
type liveHeader struct {
	Pipeline string    `json:"pipeline"`
	Seq      uint64    `json:"seq"`
	Time     time.Time `json:"time"`
}

// liveConn is one page's feed. The reader goroutine changes the watches;
// forwarders put frames in pending; the handler's goroutine writes.
type liveConn struct {
	s    *Server
	ws   *websocket.Conn
	wake chan struct{}

	mu      sync.Mutex // guards the fields below
	pending map[string]Frame
	watches map[string]*liveWatch
	notes   []any // text messages to send
}

type liveWatch struct {
	fps    float64
	cancel func()
}

func (s *Server) liveFeed(c *gin.Context) {
	if !websocket.IsWebSocketUpgrade(c.Request) {
		writeError(c, http.StatusBadRequest, "invalid", "this is a WebSocket endpoint: open it with a WebSocket client")
		return
	}
	ws, err := liveUpgrader.Upgrade(c.Writer, c.Request, nil)
	if err != nil {
		return // Upgrade answered
	}
	lc := &liveConn{s: s, ws: ws, wake: make(chan struct{}, 1), pending: map[string]Frame{}, watches: map[string]*liveWatch{}}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		lc.read()
	}()
	defer func() {
		lc.ws.Close() // ends the reader
		<-readDone
		lc.stopAll()
	}()
	ping := time.NewTicker(livePing)
	defer ping.Stop()
	for {
		select {
		case <-readDone:
			return
		case <-s.stopping:
			lc.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "ledge is stopping"), time.Now().Add(time.Second))
			return
		case <-ping.C:
			if err := lc.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(liveWriteWait)); err != nil {
				return
			}
		case <-lc.wake:
			if err := lc.flush(); err != nil {
				return
			}
		}
	}
}

// read takes the page's messages until the connection ends.
func (lc *liveConn) read() {
	lc.ws.SetReadLimit(liveMaxMessage)
	lc.ws.SetReadDeadline(time.Now().Add(3 * livePing))
	lc.ws.SetPongHandler(func(string) error { return lc.ws.SetReadDeadline(time.Now().Add(3 * livePing)) })
	for {
		kind, data, err := lc.ws.ReadMessage()
		if err != nil {
			return
		}
		lc.ws.SetReadDeadline(time.Now().Add(3 * livePing))
		if kind != websocket.TextMessage {
			continue
		}
		want, bad, err := parseLiveRequest(data)
		if err != nil {
			lc.note(map[string]string{"type": "error", "message": err.Error()})
			continue
		}
		for name, msg := range bad {
			lc.note(map[string]string{"type": "error", "pipeline": name, "message": msg})
		}
		lc.setWatches(want)
	}
}

// parseLiveRequest reads a page's watch request: the pipelines to watch
// with their rates, and those refused with why (a rate out of range).
func parseLiveRequest(data []byte) (want map[string]float64, bad map[string]string, err error) {
	var req liveRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return nil, nil, fmt.Errorf(`not a watch request: %v (send {"watch": {"<pipeline>": <fps>}})`, err)
	}
	if len(req.Watch) > liveMaxWatch {
		return nil, nil, fmt.Errorf("%d pipelines: watch at most %d on one connection", len(req.Watch), liveMaxWatch)
	}
	want = map[string]float64{}
	for name, fps := range req.Watch {
		if !(fps >= 0 && fps <= 60) {
			if bad == nil {
				bad = map[string]string{}
			}
			bad[name] = "fps: want a number from 0 to 60"
			continue
		}
		want[name] = fps
	}
	return want, bad, nil
}

// setWatches makes want the set of watched pipelines.
func (lc *liveConn) setWatches(want map[string]float64) {
	lc.mu.Lock()
	var stop []func()
	for name, w := range lc.watches {
		if fps, ok := want[name]; !ok || fps != w.fps {
			stop = append(stop, w.cancel)
			delete(lc.watches, name)
			delete(lc.pending, name)
		}
	}
	var start []string
	for name := range want {
		if _, ok := lc.watches[name]; !ok {
			start = append(start, name)
		}
	}
	lc.mu.Unlock()
	for _, f := range stop {
		f()
	}
	slices.Sort(start)
	for _, name := range start {
		fps := want[name]
		frames, cancel, err := lc.s.opts.Frames.Watch(name, fps)
		if err != nil {
			lc.note(map[string]string{"type": "error", "pipeline": name, "message": err.Error()})
			continue
		}
		lc.mu.Lock()
		lc.watches[name] = &liveWatch{fps: fps, cancel: cancel}
		lc.mu.Unlock()
		go lc.forward(name, frames)
	}
}

// forward moves one pipeline's frames into pending until its watch ends.
func (lc *liveConn) forward(name string, frames <-chan Frame) {
	for f := range frames {
		lc.mu.Lock()
		if _, ok := lc.watches[name]; ok {
			lc.pending[name] = f
		}
		lc.mu.Unlock()
		lc.poke()
	}
}

func (lc *liveConn) note(v any) {
	lc.mu.Lock()
	lc.notes = append(lc.notes, v)
	lc.mu.Unlock()
	lc.poke()
}

func (lc *liveConn) poke() {
	select {
	case lc.wake <- struct{}{}:
	default:
	}
}

// flush writes the notes and the pending frames, in pipeline order.
func (lc *liveConn) flush() error {
	lc.mu.Lock()
	notes := lc.notes
	lc.notes = nil
	frames := lc.pending
	lc.pending = map[string]Frame{}
	lc.mu.Unlock()
	for _, n := range notes {
		lc.ws.SetWriteDeadline(time.Now().Add(liveWriteWait))
		if err := lc.ws.WriteJSON(n); err != nil {
			return err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(frames)) {
		f := frames[name]
		head, err := json.Marshal(liveHeader{Pipeline: name, Seq: f.Seq, Time: f.Time})
		if err != nil {
			return err
		}
		lc.ws.SetWriteDeadline(time.Now().Add(liveWriteWait))
		w, err := lc.ws.NextWriter(websocket.BinaryMessage)
		if err != nil {
			return err
		}
		var n [2]byte
		binary.BigEndian.PutUint16(n[:], uint16(len(head)))
		w.Write(n[:])
		w.Write(head)
		w.Write(f.JPEG)
		if err := w.Close(); err != nil {
			return err
		}
	}
	return nil
}

// stopAll ends every watch (once the reader, which starts them, is gone).
func (lc *liveConn) stopAll() {
	lc.mu.Lock()
	ws := lc.watches
	lc.watches = map[string]*liveWatch{}
	lc.mu.Unlock()
	for _, w := range ws {
		w.cancel()
	}
}
