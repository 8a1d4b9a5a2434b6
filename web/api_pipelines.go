package web

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
)

// The pipeline engine as the API and the dashboard need it, one small
// interface per resource; appliance adapts the engine to each. Errors
// carry internal/fault kinds.

// Pipelines is the /pipelines resource (the Pipelines page).
type Pipelines interface {
	// List returns every pipeline's state and stats.
	List(ctx context.Context) ([]Pipeline, error)
	// Get returns one pipeline's spec, owner, state and stats.
	Get(ctx context.Context, name string) (Pipeline, error)
	// Put creates or replaces a pipeline from a spec (YAML or JSON); the
	// spec's name must equal name when name is not empty.
	Put(ctx context.Context, name string, spec []byte) (Pipeline, error)
	// Delete removes a pipeline created through the API.
	Delete(ctx context.Context, name string) error
	Start(ctx context.Context, name string) error
	Stop(ctx context.Context, name string) error
	Reload(ctx context.Context, name string) error
	// History is the recent fps and latency samples (the last hour).
	History(name string) ([]PipelineSample, error)
}

// Frames are the pipelines' annotated frames (the Live page, MJPEG
// streams, frame.jpg).
type Frames interface {
	// Watch delivers the newest annotated frame while the viewer watches,
	// at most fps a second (0: the engine's rate); frames are encoded only
	// while someone does. cancel ends it.
	Watch(name string, fps float64) (frames <-chan Frame, cancel func(), err error)
	// Latest is the newest frame encoded for viewers (zero without any).
	Latest(name string) (Frame, error)
}

// EventLog is the pipelines' event log (the Events page, /events and
// /snapshots).
type EventLog interface {
	// Events queries the tracked objects' events (one per object), newest
	// first.
	Events(ctx context.Context, q EventQuery) (EventPage, error)
	// RawEvents queries the raw events (object.enter, zone.enter, ...),
	// newest first.
	RawEvents(ctx context.Context, q EventQuery) (EventPage, error)
	// SnapshotFile is the path of a snapshot named in an event.
	SnapshotFile(name string) (string, error)
}

// Frame is one annotated JPEG of a pipeline.
type Frame struct {
	JPEG  []byte
	Seq   uint64
	Time  time.Time
	Width int
}

// EventQuery filters the event log; zero fields match everything. Type
// applies to raw events; Active (objects still in view) to tracked ones.
type EventQuery struct {
	From, To                    time.Time
	Pipeline, Type, Class, Zone string
	Active                      bool
	BeforeID                    int64
	Limit                       int
}

func (s *Server) pipelineRoutes() {
	g := s.api.Group("/pipelines", s.needPipelines)
	g.GET("", s.pipelinesList)
	g.POST("", s.pipelinePut)
	g.GET("/:name", s.pipelineGet)
	g.PUT("/:name", s.pipelinePut)
	g.DELETE("/:name", s.pipelineDelete)
	g.POST("/:name/start", s.pipelineAction(Pipelines.Start))
	g.POST("/:name/stop", s.pipelineAction(Pipelines.Stop))
	g.POST("/:name/reload", s.pipelineAction(Pipelines.Reload))
	g.GET("/:name/history", s.pipelineHistory)
	g.GET("/:name/stream.mjpeg", s.needFrames, s.pipelineStream)
	g.GET("/:name/frame.jpg", s.needFrames, s.pipelineFrame)
	s.api.GET("/live", s.needFrames, s.liveFeed)
	s.api.GET("/events", s.needEventLog, s.eventsQuery(false))
	s.api.GET("/events/raw", s.needEventLog, s.eventsQuery(true))
	s.api.GET("/snapshots/*file", s.needEventLog, s.snapshot)
}

// needPipelines, needFrames and needEventLog answer 503 when appliance
// handed web no such part.
func (s *Server) needPipelines(c *gin.Context) {
	need(c, s.opts.Pipelines != nil, "the pipeline engine is not running")
}
func (s *Server) needFrames(c *gin.Context) {
	need(c, s.opts.Frames != nil, "the pipeline engine is not running")
}
func (s *Server) needEventLog(c *gin.Context) {
	need(c, s.opts.EventLog != nil, "the pipeline engine is not running")
}

// need goes on when ok, else answers 503 with why.
func need(c *gin.Context, ok bool, why string) {
	if !ok {
		writeError(c, http.StatusServiceUnavailable, "unavailable", why)
		return
	}
	c.Next()
}

func (s *Server) pipelinesList(c *gin.Context) {
	l, err := s.opts.Pipelines.List(c.Request.Context())
	if err != nil {
		s.respondErr(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"pipelines": l})
}

func (s *Server) pipelineGet(c *gin.Context) {
	p, err := s.opts.Pipelines.Get(c.Request.Context(), c.Param("name"))
	if err != nil {
		s.respondErr(c, err)
		return
	}
	c.JSON(http.StatusOK, p)
}

// pipelinePut answers POST /pipelines (create) and PUT /pipelines/{name}
// (create or replace); the body is the spec in YAML or JSON.
func (s *Server) pipelinePut(c *gin.Context) {
	body, ok := readBody(c)
	if !ok {
		return
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		writeError(c, http.StatusBadRequest, "invalid", "empty body: send a pipeline spec (YAML or JSON, see docs/pipelines.md)")
		return
	}
	p, err := s.opts.Pipelines.Put(c.Request.Context(), c.Param("name"), body)
	if err != nil {
		s.respondErr(c, err)
		return
	}
	status := http.StatusOK
	if c.Request.Method == http.MethodPost {
		status = http.StatusCreated
	}
	c.JSON(status, p)
}

func (s *Server) pipelineDelete(c *gin.Context) {
	if err := s.opts.Pipelines.Delete(c.Request.Context(), c.Param("name")); err != nil {
		s.respondErr(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

func (s *Server) pipelineAction(do func(Pipelines, context.Context, string) error) gin.HandlerFunc {
	return func(c *gin.Context) {
		if err := do(s.opts.Pipelines, c.Request.Context(), c.Param("name")); err != nil {
			s.respondErr(c, err)
			return
		}
		p, err := s.opts.Pipelines.Get(c.Request.Context(), c.Param("name"))
		if err != nil {
			s.respondErr(c, err)
			return
		}
		c.JSON(http.StatusOK, p)
	}
}

func (s *Server) pipelineHistory(c *gin.Context) {
	h, err := s.opts.Pipelines.History(c.Param("name"))
	if err != nil {
		s.respondErr(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"samples": h})
}

const mjpegBoundary = "ledgeframe"

// pipelineStream serves GET /pipelines/{name}/stream.mjpeg?fps=: annotated
// frames as multipart/x-mixed-replace, encoded only while watched.
func (s *Server) pipelineStream(c *gin.Context) {
	fps, ok := fpsParam(c)
	if !ok {
		return
	}
	frames, cancel, err := s.opts.Frames.Watch(c.Param("name"), fps)
	if err != nil {
		s.respondErr(c, err)
		return
	}
	defer cancel()
	h := c.Writer.Header()
	h.Set("Content-Type", "multipart/x-mixed-replace; boundary="+mjpegBoundary)
	h.Set("Cache-Control", "no-cache, no-store")
	h.Set("X-Accel-Buffering", "no")
	c.Status(http.StatusOK)
	c.Writer.Flush()
	for {
		select {
		case <-c.Request.Context().Done():
			return
		case <-s.stopping:
			return
		case f, ok := <-frames:
			if !ok {
				return
			}
			if _, err := fmt.Fprintf(c.Writer, "--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\nX-Frame: %d\r\n\r\n", mjpegBoundary, len(f.JPEG), f.Seq); err != nil {
				return
			}
			if _, err := c.Writer.Write(f.JPEG); err != nil {
				return
			}
			if _, err := c.Writer.Write([]byte("\r\n")); err != nil {
				return
			}
			c.Writer.Flush()
		}
	}
}

// fpsParam reads ?fps= (frames a second, 0 to 60; absent: 0, the
// engine's rate); on a bad value it answers 400 and returns false.
func fpsParam(c *gin.Context) (float64, bool) {
	v := c.Query("fps")
	if v == "" {
		return 0, true
	}
	fps, err := strconv.ParseFloat(v, 64)
	if err != nil || fps < 0 || fps > 60 {
		writeError(c, http.StatusBadRequest, "invalid", "fps: want a number from 0 to 60 (0: the engine's watchFps)")
		return 0, false
	}
	return fps, true
}

// pipelineFrame serves the newest annotated frame as a JPEG (404 when
// nobody watched yet: open the stream instead).
func (s *Server) pipelineFrame(c *gin.Context) {
	f, err := s.opts.Frames.Latest(c.Param("name"))
	if err != nil {
		s.respondErr(c, err)
		return
	}
	if len(f.JPEG) == 0 {
		writeError(c, http.StatusNotFound, "not_found", "no frame encoded yet: frames are encoded while someone watches stream.mjpeg")
		return
	}
	c.Header("Cache-Control", "no-cache")
	c.Data(http.StatusOK, "image/jpeg", f.JPEG)
}

// eventsQuery answers GET /events?from&to&pipeline&class&zone&active&before&limit
// (the tracked objects' events) and, raw, GET /events/raw?...&type with
// {"events": [...], "next": <before cursor or 0>}, newest first.
func (s *Server) eventsQuery(raw bool) gin.HandlerFunc {
	return func(c *gin.Context) {
		var q EventQuery
		var err error
		if q.From, err = parseTimeParam(c.Query("from")); err != nil {
			writeError(c, http.StatusBadRequest, "invalid", "from: "+err.Error())
			return
		}
		if q.To, err = parseTimeParam(c.Query("to")); err != nil {
			writeError(c, http.StatusBadRequest, "invalid", "to: "+err.Error())
			return
		}
		q.Pipeline, q.Type, q.Class, q.Zone = c.Query("pipeline"), c.Query("type"), c.Query("class"), c.Query("zone")
		if !raw && q.Type != "" {
			writeError(c, http.StatusBadRequest, "invalid", "type: events here are one per tracked object; filter raw events (object.enter, zone.enter, ...) by type at /api/v1/events/raw")
			return
		}
		switch v := c.Query("active"); {
		case v == "":
		case raw:
			writeError(c, http.StatusBadRequest, "invalid", "active: raw events have no duration; use /api/v1/events?active=true for the objects in view")
			return
		default:
			if q.Active, err = strconv.ParseBool(v); err != nil {
				writeError(c, http.StatusBadRequest, "invalid", "active: want true or false")
				return
			}
		}
		if v := c.Query("before"); v != "" {
			if q.BeforeID, err = strconv.ParseInt(v, 10, 64); err != nil || q.BeforeID <= 0 {
				writeError(c, http.StatusBadRequest, "invalid", "before: want an event id")
				return
			}
		}
		q.Limit = 50
		if v := c.Query("limit"); v != "" {
			if q.Limit, err = strconv.Atoi(v); err != nil || q.Limit < 1 || q.Limit > 1000 {
				writeError(c, http.StatusBadRequest, "invalid", "limit: want a number from 1 to 1000")
				return
			}
		}
		query := s.opts.EventLog.Events
		if raw {
			query = s.opts.EventLog.RawEvents
		}
		ev, err := query(c.Request.Context(), q)
		if err != nil {
			s.respondErr(c, err)
			return
		}
		c.JSON(http.StatusOK, ev)
	}
}

// parseTimeParam reads RFC 3339 or Unix milliseconds; "" is the zero time.
func parseTimeParam(v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if ms, err := strconv.ParseInt(v, 10, 64); err == nil {
		return time.UnixMilli(ms), nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: want RFC 3339 (2026-11-30T08:00:00Z) or Unix milliseconds", v)
	}
	return t, nil
}

// snapshot serves an event's snapshot JPEG.
func (s *Server) snapshot(c *gin.Context) {
	path, err := s.opts.EventLog.SnapshotFile(strings.TrimPrefix(c.Param("file"), "/"))
	if err != nil {
		s.respondErr(c, err)
		return
	}
	if filepath.Ext(path) != ".jpg" {
		writeError(c, http.StatusNotFound, "not_found", "not a snapshot")
		return
	}
	c.Header("Cache-Control", "private, max-age=86400")
	c.File(path)
}
