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

// What the API needs from the MQTT hub, one small interface per resource;
// appliance adapts the hub to each. Errors carry internal/fault kinds.

// HubStatus is GET /hub (and the Hub page).
type HubStatus interface {
	Stats() HubStats
}

// UpstreamStatus is GET /upstream: the link to the upstream broker or
// parent, with the hub or without it (hub.enabled: false still links a
// fleet device to its broker).
type UpstreamStatus interface {
	Upstream() HubUpstream
}

// HubIdentities are /hub/identities.
type HubIdentities interface {
	Identities() []HubIdentity
	AddIdentity(ctx context.Context, spec HubIdentitySpec) (HubCreated, error)
	ShowIdentity(name string) (HubCreated, error)
	RemoveIdentity(ctx context.Context, name string) error
}

// HubTwins are /hub/twins.
type HubTwins interface {
	GetTwin(ctx context.Context, name string) (HubTwin, error)
	PatchDesired(ctx context.Context, name string, patch []byte) (HubTwin, error)
}

// HubMessages are direct methods and cloud-to-device messages.
type HubMessages interface {
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
	g := s.api.Group("/hub")
	status, ids, twins, msgs := needHub(s.opts.HubStatus != nil), needHub(s.opts.HubIdentities != nil),
		needHub(s.opts.HubTwins != nil), needHub(s.opts.HubMessages != nil)
	g.GET("", status, s.hubStats)
	g.GET("/identities", ids, s.hubIdentities)
	g.POST("/identities", ids, s.hubAddIdentity)
	g.GET("/identities/*name", ids, s.hubShowIdentity)
	g.DELETE("/identities/*name", ids, s.hubRemoveIdentity)
	g.GET("/twins/*name", twins, s.hubGetTwin)
	g.PATCH("/twins/*name", twins, s.hubPatchTwin)
	g.POST("/methods", msgs, s.hubInvoke)
	g.POST("/c2d", msgs, s.hubC2D)
	s.api.GET("/upstream", func(c *gin.Context) {
		need(c, s.opts.Upstream != nil, "no upstream is configured (hub.upstream in ledge.yaml)")
	}, func(c *gin.Context) { c.JSON(http.StatusOK, s.opts.Upstream.Upstream()) })
}

// needHub answers 503 unless the hub's part is there.
func needHub(ok bool) gin.HandlerFunc {
	return func(c *gin.Context) { need(c, ok, "the MQTT hub is not running (hub.enabled: false)") }
}

func pathName(c *gin.Context) string { return strings.Trim(c.Param("name"), "/") }

func (s *Server) hubStats(c *gin.Context) { c.JSON(http.StatusOK, s.opts.HubStatus.Stats()) }

func (s *Server) hubIdentities(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"identities": s.opts.HubIdentities.Identities()})
}

func (s *Server) hubAddIdentity(c *gin.Context) {
	var spec HubIdentitySpec
	if !bindJSON(c, &spec) {
		return
	}
	out, err := s.opts.HubIdentities.AddIdentity(c.Request.Context(), spec)
	if err != nil {
		s.respondErr(c, err)
		return
	}
	c.JSON(http.StatusCreated, out)
}

func (s *Server) hubShowIdentity(c *gin.Context) {
	out, err := s.opts.HubIdentities.ShowIdentity(pathName(c))
	if err != nil {
		s.respondErr(c, err)
		return
	}
	c.JSON(http.StatusOK, out)
}

func (s *Server) hubRemoveIdentity(c *gin.Context) {
	if err := s.opts.HubIdentities.RemoveIdentity(c.Request.Context(), pathName(c)); err != nil {
		s.respondErr(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

func (s *Server) hubGetTwin(c *gin.Context) {
	out, err := s.opts.HubTwins.GetTwin(c.Request.Context(), pathName(c))
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
	out, err := s.opts.HubTwins.PatchDesired(c.Request.Context(), pathName(c), body)
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
	status, payload, err := s.opts.HubMessages.InvokeMethod(c.Request.Context(), req.Target, req.Method, req.Payload,
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
	if err := s.opts.HubMessages.SendC2D(c.Request.Context(), req.Device, body, req.Properties); err != nil {
		s.respondErr(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}
