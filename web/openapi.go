package web

import (
	_ "embed"
	"net/http"

	"github.com/gin-gonic/gin"
)

// openAPI documents every /api/v1 route; a test checks it against the
// routes the server registers.
//
//go:embed openapi.json
var openAPI []byte

func (s *Server) openAPIDoc(c *gin.Context) {
	c.Data(http.StatusOK, "application/json", openAPI)
}
