package web

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"ledge/internal/fault"
)

// HubAPI is what the API needs from the MQTT hub; appliance adapts the
// hub to it. Results are JSON-ready values.
type HubAPI interface {
	Stats() any
	Identities() any
	AddIdentity(ctx context.Context, spec HubIdentitySpec) (any, error)
	ShowIdentity(name string) (any, error)
	RemoveIdentity(ctx context.Context, name string) error
	GetTwin(ctx context.Context, name string) (any, error)
	PatchDesired(ctx context.Context, name string, patch []byte) (any, error)
	InvokeMethod(ctx context.Context, target, method string, payload json.RawMessage, timeout time.Duration) (int, json.RawMessage, error)
	SendC2D(ctx context.Context, device string, body []byte, props map[string]string) error
}

// HubIdentitySpec is the body of POST /api/v1/hub/identities.
type HubIdentitySpec struct {
	Name           string `json:"name"`
	Kind           string `json:"kind,omitempty"` // device (default), module (name d/m), user
	Password       string `json:"password,omitempty"`
	X509Thumbprint string `json:"x509Thumbprint,omitempty"`
	X509CA         bool   `json:"x509CA,omitempty"`
	Parent         string `json:"parent,omitempty"` // device: the edge device that may connect on its behalf
}

type methodRequest struct {
	Target         string          `json:"target"` // device or device/module
	Method         string          `json:"method"`
	Payload        json.RawMessage `json:"payload,omitempty"`
	TimeoutSeconds float64         `json:"timeoutSeconds,omitempty"`
}

type c2dRequest struct {
	Device     string            `json:"device"`
	Body       json.RawMessage   `json:"body"` // JSON sent as is; a JSON string is sent as its text
	Properties map[string]string `json:"properties,omitempty"`
}

// hubRoutes registers /api/v1/hub/...; without a hub they answer 503.
func (s *Server) hubRoutes() {
	g := s.api.Group("/hub", s.needHub)
	g.GET("", s.hubStats)
	g.GET("/identities", s.hubIdentities)
	g.POST("/identities", s.hubAddIdentity)
	g.GET("/identities/*name", s.hubShowIdentity)
	g.DELETE("/identities/*name", s.hubRemoveIdentity)
	g.GET("/twins/*name", s.hubGetTwin)
	g.PATCH("/twins/*name", s.hubPatchTwin)
	g.POST("/methods", s.hubInvoke)
	g.POST("/c2d", s.hubC2D)
}

func (s *Server) needHub(c *gin.Context) {
	if s.opts.Hub == nil {
		writeError(c, http.StatusServiceUnavailable, string(fault.Unavailable), "the MQTT hub is not running (hub.enabled: false)")
		return
	}
	c.Next()
}

func pathName(c *gin.Context) string { return strings.Trim(c.Param("name"), "/") }

func (s *Server) hubStats(c *gin.Context) { c.JSON(http.StatusOK, s.opts.Hub.Stats()) }

func (s *Server) hubIdentities(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"identities": s.opts.Hub.Identities()})
}

func (s *Server) hubAddIdentity(c *gin.Context) {
	var spec HubIdentitySpec
	if !bindJSON(c, &spec) {
		return
	}
	out, err := s.opts.Hub.AddIdentity(c.Request.Context(), spec)
	if err != nil {
		s.respondErr(c, err)
		return
	}
	c.JSON(http.StatusCreated, out)
}

func (s *Server) hubShowIdentity(c *gin.Context) {
	out, err := s.opts.Hub.ShowIdentity(pathName(c))
	if err != nil {
		s.respondErr(c, err)
		return
	}
	c.JSON(http.StatusOK, out)
}

func (s *Server) hubRemoveIdentity(c *gin.Context) {
	if err := s.opts.Hub.RemoveIdentity(c.Request.Context(), pathName(c)); err != nil {
		s.respondErr(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

func (s *Server) hubGetTwin(c *gin.Context) {
	out, err := s.opts.Hub.GetTwin(c.Request.Context(), pathName(c))
	if err != nil {
		s.respondErr(c, err)
		return
	}
	c.JSON(http.StatusOK, out)
}

func (s *Server) hubPatchTwin(c *gin.Context) {
	body, ok := readBody(c)
	if !ok {
		return
	}
	out, err := s.opts.Hub.PatchDesired(c.Request.Context(), pathName(c), body)
	if err != nil {
		s.respondErr(c, err)
		return
	}
	c.JSON(http.StatusOK, out)
}

func (s *Server) hubInvoke(c *gin.Context) {
	var req methodRequest
	if !bindJSON(c, &req) {
		return
	}
	if req.Target == "" || req.Method == "" {
		writeError(c, http.StatusBadRequest, string(fault.Invalid), "target and method are required")
		return
	}
	if req.TimeoutSeconds < 0 || req.TimeoutSeconds > 300 {
		writeError(c, http.StatusBadRequest, string(fault.Invalid), "timeoutSeconds: want 0 (default) to 300")
		return
	}
	status, payload, err := s.opts.Hub.InvokeMethod(c.Request.Context(), req.Target, req.Method, req.Payload,
		time.Duration(req.TimeoutSeconds*float64(time.Second)))
	if err != nil {
		s.respondErr(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": status, "payload": payload})
}

func (s *Server) hubC2D(c *gin.Context) {
	var req c2dRequest
	if !bindJSON(c, &req) {
		return
	}
	if req.Device == "" {
		writeError(c, http.StatusBadRequest, string(fault.Invalid), "device is required")
		return
	}
	body := []byte(req.Body)
	var str string
	if json.Unmarshal(req.Body, &str) == nil {
		body = []byte(str)
	}
	if err := s.opts.Hub.SendC2D(c.Request.Context(), req.Device, body, req.Properties); err != nil {
		s.respondErr(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}
