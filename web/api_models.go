package web

import (
	"context"
	"net/http"

	"github.com/gin-gonic/gin"
)

// ModelStore is what the model routes (and the Models page) need;
// appliance hands web the model store behind it. Errors carry
// internal/fault kinds (a bad spec is Invalid, an unknown name NotFound, a
// version that is not ready or a rollback with nowhere to go Conflict, a
// bad signature Unauthorized, over the quota TooLarge).
type ModelStore interface {
	// List returns every model with its versions, states and download
	// progress.
	List(ctx context.Context) ([]Model, error)
	// Get returns one model with its versions.
	Get(ctx context.Context, name string) (Model, error)
	// Pull records a model version (spec: the JSON of one manifest models
	// entry) and downloads it in the background; activate activates it
	// once it is ready.
	Pull(ctx context.Context, spec []byte, activate bool) (ModelVersion, error)
	// Activate makes name@version active (loaded and warmed first) and
	// pins it; it returns once the version serves or failed to.
	Activate(ctx context.Context, name, version string) (ModelVersion, error)
	// Rollback activates the version that was active before the current.
	Rollback(ctx context.Context, name string) (ModelVersion, error)
}

func (s *Server) modelRoutes() {
	g := s.api.Group("/models", s.needModels)
	g.GET("", s.modelList)
	g.POST("", s.modelPull)
	g.GET("/:name", s.modelGet)
	g.POST("/:name/activate", s.modelActivate)
	g.POST("/:name/rollback", s.modelRollback)
}

func (s *Server) modelList(c *gin.Context) {
	ms, err := s.opts.Models.List(c.Request.Context())
	if err != nil {
		s.respondErr(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"models": ms})
}

func (s *Server) modelGet(c *gin.Context) {
	m, err := s.opts.Models.Get(c.Request.Context(), c.Param("name"))
	if err != nil {
		s.respondErr(c, err)
		return
	}
	c.JSON(http.StatusOK, m)
}

// modelPull answers POST /api/v1/models[?activate=true] with 202: the
// version is recorded and downloading; follow it at /models/{name} or on
// the event stream (model.progress, model.state).
func (s *Server) modelPull(c *gin.Context) {
	activate := false
	switch c.Query("activate") {
	case "", "false", "0":
	case "true", "1":
		activate = true
	default:
		writeError(c, http.StatusBadRequest, "invalid", "activate: want true or false")
		return
	}
	body, ok := readBody(c)
	if !ok {
		return
	}
	v, err := s.opts.Models.Pull(c.Request.Context(), body, activate)
	if err != nil {
		s.respondErr(c, err)
		return
	}
	c.JSON(http.StatusAccepted, gin.H{"version": v})
}

type activateRequest struct {
	Version string `json:"version"`
}

func (s *Server) modelActivate(c *gin.Context) {
	var req activateRequest
	if !bindJSON(c, &req) {
		return
	}
	if req.Version == "" {
		writeError(c, http.StatusBadRequest, "invalid", `"version" is required: {"version": "2"}`)
		return
	}
	v, err := s.opts.Models.Activate(c.Request.Context(), c.Param("name"), req.Version)
	if err != nil {
		s.respondErr(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"version": v})
}

func (s *Server) modelRollback(c *gin.Context) {
	v, err := s.opts.Models.Rollback(c.Request.Context(), c.Param("name"))
	if err != nil {
		s.respondErr(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"version": v})
}

func (s *Server) needModels(c *gin.Context) {
	if s.opts.Models == nil {
		writeError(c, http.StatusServiceUnavailable, "unavailable", "this ledge has no model store")
		return
	}
	c.Next()
}
