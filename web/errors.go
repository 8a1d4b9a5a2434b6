package web

import (
	"crypto/rand"
	"encoding/hex"

	"github.com/gin-gonic/gin"
)

// apiError is the JSON body of every error answer: a stable machine code,
// a message a person can act on, and for server faults an id that is also
// in the log.
type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	ID      string `json:"id,omitempty"`
}

func writeError(c *gin.Context, status int, code, message string) {
	writeErrorID(c, status, code, message, "")
}

func writeErrorID(c *gin.Context, status int, code, message, id string) {
	c.AbortWithStatusJSON(status, gin.H{"error": apiError{Code: code, Message: message, ID: id}})
}

func newErrorID() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
