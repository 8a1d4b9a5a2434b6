package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"ledge/internal/fault"
)

// The REST API lives under /api/v1. Each area (hub, agent, pipelines, ...)
// registers its routes from its own file, given the group, when appliance
// handed web its implementation in Options.
//
// Who may call it: see auth.go.

// connKind marks how a request arrived.
type connKind int

const (
	connTCP connKind = iota
	connUnix
)

type connKindKey struct{}

// connContext records in each connection's context whether it came over
// the unix socket.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if _, ok := c.(*net.UnixConn); ok {
		return context.WithValue(ctx, connKindKey{}, connUnix)
	}
	return context.WithValue(ctx, connKindKey{}, connTCP)
}

// fromSocket reports whether r arrived over the local unix socket.
func fromSocket(r *http.Request) bool {
	k, _ := r.Context().Value(connKindKey{}).(connKind)
	return k == connUnix
}

// fromLoopback reports whether r came from a loopback address.
func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// statuses maps error kinds to HTTP statuses; anything else is a 500.
var statuses = map[fault.Kind]int{
	fault.Invalid:      http.StatusBadRequest,
	fault.NotFound:     http.StatusNotFound,
	fault.Conflict:     http.StatusConflict,
	fault.Unavailable:  http.StatusServiceUnavailable,
	fault.Timeout:      http.StatusGatewayTimeout,
	fault.Unauthorized: http.StatusUnauthorized,
	fault.Forbidden:    http.StatusForbidden,
	fault.TooLarge:     http.StatusRequestEntityTooLarge,
}

// statusOf maps an error kind to an HTTP status.
func statusOf(k fault.Kind) int {
	if s, ok := statuses[k]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// respondErr answers with the error's kind; an internal error is logged
// with an id and its text is not shown.
func (s *Server) respondErr(c *gin.Context, err error) {
	k := fault.KindOf(err)
	if k == fault.Internal && fault.DiskFull(err) {
		// Not a bug: the operator can fix it, so say what and where (the
		// log has said once that the data disk is low).
		s.log.Debug("request failed: disk full", "method", c.Request.Method, "path", c.Request.URL.Path, "err", err)
		where := "the data dir"
		if s.opts.DataDir != "" {
			where += " (" + s.opts.DataDir + ")"
		}
		writeError(c, http.StatusInsufficientStorage, "disk_full", "the disk of "+where+" is full, so this was not stored ("+err.Error()+"): free space there; ledge status shows how much is free")
		return
	}
	if k == fault.Internal {
		id := newErrorID()
		s.log.Error("request failed", "id", id, "method", c.Request.Method, "path", c.Request.URL.Path, "err", err)
		writeErrorID(c, http.StatusInternalServerError, "internal", "internal error (id "+id+" in the log)", id)
		return
	}
	writeError(c, statusOf(k), string(k), err.Error())
}

// bindJSON decodes the request body into v, strictly (unknown fields are
// errors); on failure it answers 400 naming the problem and returns false.
func bindJSON(c *gin.Context, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, maxBody))
	if err != nil {
		writeError(c, http.StatusRequestEntityTooLarge, string(fault.TooLarge), fmt.Sprintf("request body over %d bytes", maxBody))
		return false
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(c, http.StatusBadRequest, string(fault.Invalid), "malformed JSON body: "+jsonErrorText(body, err))
		return false
	}
	if dec.More() {
		writeError(c, http.StatusBadRequest, string(fault.Invalid), "malformed JSON body: more than one value")
		return false
	}
	return true
}

// readBody returns the raw request body (for components that parse it
// themselves, like manifests), bounded by maxBody.
func readBody(c *gin.Context) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, maxBody))
	if err != nil {
		writeError(c, http.StatusRequestEntityTooLarge, string(fault.TooLarge), fmt.Sprintf("request body over %d bytes", maxBody))
		return nil, false
	}
	return body, true
}

// jsonErrorText adds the byte offset to JSON syntax and type errors.
func jsonErrorText(body []byte, err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("%v (at byte %d)", se, se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q: got %s, want %s (at byte %d)", te.Field, te.Value, te.Type, te.Offset)
	case errors.Is(err, io.EOF):
		return "empty body"
	}
	return err.Error()
}
