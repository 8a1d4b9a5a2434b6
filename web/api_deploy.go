package web

import (
	"context"
	"fmt"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"
)

// Deployments is what the deployment routes need; appliance hands web the
// agent behind it. Errors carry internal/fault kinds (a manifest that does
// not validate is Invalid, a bad signature Unauthorized, elevated
// container settings the policy refuses Forbidden, nothing to roll back to
// Conflict).
type Deployments interface {
	// Check verifies a manifest (and its detached signature, if any) and
	// returns the plan against what runs now, changing nothing.
	Check(ctx context.Context, manifest, signature []byte) (DeploymentPlan, error)
	// Apply makes the manifest the current deployment; it returns once the
	// deployment is persisted, with its plan.
	Apply(ctx context.Context, manifest, signature []byte) (AppliedDeployment, error)
	// Status is the reported state.
	Status(ctx context.Context) (AgentReport, error)
	// History lists past deployments, newest first.
	History(ctx context.Context, limit int) ([]Deployment, error)
	// Rollback returns to the last good deployment before the current.
	Rollback(ctx context.Context) (Deployment, error)
	// Manifest returns deployment id (0: the current one) and its manifest
	// text as it was received.
	Manifest(ctx context.Context, id int64) (Deployment, []byte, error)
}

// Modules is what the module routes need (the agent's containers).
type Modules interface {
	// Modules is the runtime state of every module, by name.
	Modules(ctx context.Context) (map[string]ModuleReport, error)
	// RestartModule restarts a module's container now.
	RestartModule(ctx context.Context, name string) error
	// ModuleLogs returns the last tail lines of a module's output.
	ModuleLogs(ctx context.Context, name string, tail int) ([]byte, error)
}

// manifestRequest is the body of check and apply: the manifest text as
// written (YAML or JSON) and, optionally, the content of its .sig file.
type manifestRequest struct {
	Manifest  string `json:"manifest"`
	Signature string `json:"signature,omitempty"`
}

func (s *Server) deployRoutes() {
	g := s.api.Group("/deployments", s.needDeploy)
	g.GET("", s.deployHistory)
	g.POST("", s.deployApply)
	g.POST("/check", s.deployCheck)
	g.GET("/current", s.deployStatus)
	g.POST("/rollback", s.deployRollback)
	g.GET("/:id/manifest", s.deployManifest)
	m := s.api.Group("/modules", s.needModules)
	m.GET("", s.modulesList)
	m.POST("/:name/restart", s.moduleRestart)
	m.GET("/:name/logs", s.moduleLogs)
}

// deployManifest answers GET /deployments/{id}/manifest ("current" or a
// number): the deployment and its manifest text.
func (s *Server) deployManifest(c *gin.Context) {
	var id int64
	if v := c.Param("id"); v != "current" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			writeError(c, http.StatusBadRequest, "invalid", fmt.Sprintf("deployment id %q: want a number or \"current\"", v))
			return
		}
		id = n
	}
	d, text, err := s.opts.Deployments.Manifest(c.Request.Context(), id)
	if err != nil {
		s.respondErr(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"deployment": d, "manifest": string(text)})
}

func (s *Server) modulesList(c *gin.Context) {
	m, err := s.opts.Modules.Modules(c.Request.Context())
	if err != nil {
		s.respondErr(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"modules": m})
}

func (s *Server) moduleRestart(c *gin.Context) {
	if err := s.opts.Modules.RestartModule(c.Request.Context(), c.Param("name")); err != nil {
		s.respondErr(c, err)
		return
	}
	c.JSON(http.StatusAccepted, gin.H{"restarting": c.Param("name")})
}

// moduleLogs answers GET /modules/{name}/logs?tail=N as plain text.
func (s *Server) moduleLogs(c *gin.Context) {
	tail := 200
	if v := c.Query("tail"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			writeError(c, http.StatusBadRequest, "invalid", "tail: want a number from 1 to 10000")
			return
		}
		tail = n
	}
	out, err := s.opts.Modules.ModuleLogs(c.Request.Context(), c.Param("name"), tail)
	if err != nil {
		s.respondErr(c, err)
		return
	}
	c.Data(http.StatusOK, "text/plain; charset=utf-8", out)
}

// needDeploy and needModules answer 503 when ledge runs without the
// agent.
func (s *Server) needDeploy(c *gin.Context) {
	need(c, s.opts.Deployments != nil, "the agent is disabled (agent.enabled: false)")
}
func (s *Server) needModules(c *gin.Context) {
	need(c, s.opts.Modules != nil, "the agent is disabled (agent.enabled: false)")
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
	plan, err := s.opts.Deployments.Check(c.Request.Context(), []byte(req.Manifest), []byte(req.Signature))
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
	res, err := s.opts.Deployments.Apply(c.Request.Context(), []byte(req.Manifest), []byte(req.Signature))
	if err != nil {
		s.respondErr(c, err)
		return
	}
	c.JSON(http.StatusAccepted, res)
}

func (s *Server) deployStatus(c *gin.Context) {
	st, err := s.opts.Deployments.Status(c.Request.Context())
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
	h, err := s.opts.Deployments.History(c.Request.Context(), limit)
	if err != nil {
		s.respondErr(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"deployments": h})
}

func (s *Server) deployRollback(c *gin.Context) {
	d, err := s.opts.Deployments.Rollback(c.Request.Context())
	if err != nil {
		s.respondErr(c, err)
		return
	}
	c.JSON(http.StatusAccepted, gin.H{"deployment": d})
}
