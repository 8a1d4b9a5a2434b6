package web

import (
	"context"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"
)

// Deployer is what the deployment routes need; appliance hands web the
// agent behind it. Results are JSON-encodable values; errors carry
// internal/fault kinds (a manifest that does not validate is Invalid, a
// bad signature Unauthorized, nothing to roll back to Conflict).
type Deployer interface {
	// Check verifies a manifest (and its detached signature, if any) and
	// returns the plan against what runs now, changing nothing.
	Check(ctx context.Context, manifest, signature []byte) (any, error)
	// Apply makes the manifest the current deployment; it returns once the
	// deployment is persisted, with its plan.
	Apply(ctx context.Context, manifest, signature []byte) (any, error)
	// Status is the reported state.
	Status(ctx context.Context) (any, error)
	// History lists past deployments, newest first.
	History(ctx context.Context, limit int) (any, error)
	// Rollback returns to the last good deployment before the current.
	Rollback(ctx context.Context) (any, error)
}

// manifestRequest is the body of check and apply: the manifest text as
// written (YAML or JSON) and, optionally, the content of its .sig file.
type manifestRequest struct {
	Manifest  string `json:"manifest"`
	Signature string `json:"signature,omitempty"`
}

func (s *Server) deployRoutes() {
	g := s.api.Group("/deployments")
	g.GET("", s.deployHistory)
	g.POST("", s.deployApply)
	g.POST("/check", s.deployCheck)
	g.GET("/current", s.deployStatus)
	g.POST("/rollback", s.deployRollback)
}

func (s *Server) manifestBody(c *gin.Context) (*manifestRequest, bool) {
	var req manifestRequest
	if !bindJSON(c, &req) {
		return nil, false
	}
	if req.Manifest == "" {
		writeError(c, http.StatusBadRequest, "invalid", `"manifest" is empty: send {"manifest": "<the manifest text>", "signature": "<its .sig, optional>"}`)
		return nil, false
	}
	return &req, true
}

// deployCheck answers POST /api/v1/deployments/check with the plan.
func (s *Server) deployCheck(c *gin.Context) {
	req, ok := s.manifestBody(c)
	if !ok {
		return
	}
	plan, err := s.opts.Deploy.Check(c.Request.Context(), []byte(req.Manifest), []byte(req.Signature))
	if err != nil {
		s.respondErr(c, err)
		return
	}
	c.JSON(http.StatusOK, plan)
}

// deployApply answers POST /api/v1/deployments: 202, the deployment is
// persisted and being reconciled; follow it at /deployments/current.
func (s *Server) deployApply(c *gin.Context) {
	req, ok := s.manifestBody(c)
	if !ok {
		return
	}
	res, err := s.opts.Deploy.Apply(c.Request.Context(), []byte(req.Manifest), []byte(req.Signature))
	if err != nil {
		s.respondErr(c, err)
		return
	}
	c.JSON(http.StatusAccepted, res)
}

func (s *Server) deployStatus(c *gin.Context) {
	st, err := s.opts.Deploy.Status(c.Request.Context())
	if err != nil {
		s.respondErr(c, err)
		return
	}
	c.JSON(http.StatusOK, st)
}

func (s *Server) deployHistory(c *gin.Context) {
	limit := 20
	if v := c.Query("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			writeError(c, http.StatusBadRequest, "invalid", "limit: want a number from 1 to 1000")
			return
		}
		limit = n
	}
	h, err := s.opts.Deploy.History(c.Request.Context(), limit)
	if err != nil {
		s.respondErr(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"deployments": h})
}

func (s *Server) deployRollback(c *gin.Context) {
	d, err := s.opts.Deploy.Rollback(c.Request.Context())
	if err != nil {
		s.respondErr(c, err)
		return
	}
	c.JSON(http.StatusAccepted, gin.H{"deployment": d})
}
