package hub

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"ledge/internal/fault"
)

// Module-to-module direct methods, as edgeHub serves them over HTTPS
// (reference §4.6) and the Azure IoT SDKs' ModuleClient.invokeMethod
// calls them: POST /twins/<device>[/modules/<module>]/methods, with the
// calling module in x-ms-edge-moduleId (<device>/<module>, a module of
// this device, as edgeHub allows) and its SAS token in Authorization; the
// body is {"methodName", "payload", "responseTimeoutInSeconds",
// "connectTimeoutInSeconds"}, the answer {"status", "payload"}. Errors
// are HTTP statuses with IoT Hub's error body, which the SDKs read
// ({"Message": "ErrorCode:<code>;<text>"}): 404 DeviceNotFound when the
// target is not connected, 504 GatewayTimeout when it does not answer in
// time, 401 for a caller that is not authenticated, 400 for a bad request.
// Served where the SDKs dial it: on hub.listen.websocket (":443").

// maxMethodRequest bounds a method request's body: the payload and the
// fields around it.
const maxMethodRequest = MaxMethodPayload + 4096

// methodsHandler serves POST /twins/... .
func (h *Hub) methodsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status, body := h.serveMethod(w, r)
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(status)
		w.Write(body)
	})
}

func (h *Hub) serveMethod(w http.ResponseWriter, r *http.Request) (int, []byte) {
	target, ok := methodTarget(r.URL.EscapedPath())
	switch {
	case !ok:
		return methodError(http.StatusNotFound, "not found: POST /twins/<device>[/modules/<module>]/methods")
	case r.Method != http.MethodPost:
		return methodError(http.StatusMethodNotAllowed, "use POST")
	}
	caller := r.Header.Get("x-ms-edge-moduleId")
	dev, mod, _ := strings.Cut(caller, "/")
	if dev == "" || mod == "" || strings.Contains(mod, "/") {
		return methodError(http.StatusBadRequest, "invalid header value for x-ms-edge-moduleId: want <device>/<module>")
	}
	if !strings.EqualFold(dev, h.deviceID) {
		return methodError(http.StatusUnauthorized, "only modules on the same device can invoke direct methods")
	}
	id := h.twinIdentity(caller)
	if id == nil || id.Kind != KindModule || !id.Enabled {
		return methodError(http.StatusUnauthorized, "unknown or disabled module "+caller)
	}
	if _, _, why := h.checkToken(id, r.Header.Get("Authorization")); why != "" {
		h.stats.authFailures.Add(1)
		if h.refusals.note(r.RemoteAddr, clip(caller), "direct method refused: bad token", time.Now()) {
			h.log.Info("direct method refused", "caller", clip(caller), "remote", r.RemoteAddr, "reason", clip(why))
		}
		return methodError(http.StatusUnauthorized, "not authorized: "+why)
	}
	// Authenticated: no longer one of the pending connections, whose
	// oldest a flood of new ones closes (a call may wait 300 s).
	if c, ok := r.Context().Value(connKey{}).(net.Conn); ok {
		upgraded(c)
	}
	var req struct {
		MethodName               string          `json:"methodName"`
		Payload                  json.RawMessage `json:"payload"`
		ResponseTimeoutInSeconds int             `json:"responseTimeoutInSeconds"`
		ConnectTimeoutInSeconds  int             `json:"connectTimeoutInSeconds"`
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxMethodRequest+1))
	switch {
	case err != nil:
		return methodError(http.StatusBadRequest, "reading the request: "+err.Error())
	case len(raw) > maxMethodRequest:
		return methodError(http.StatusRequestEntityTooLarge, fmt.Sprintf("request over %d bytes", maxMethodRequest))
	}
	if err := json.Unmarshal(raw, &req); err != nil {
		return methodError(http.StatusBadRequest, "the request is not a method request: "+err.Error())
	}
	if req.ResponseTimeoutInSeconds < 0 || req.ResponseTimeoutInSeconds > 300 {
		return methodError(http.StatusBadRequest, fmt.Sprintf("responseTimeoutInSeconds %d: want 0 (the hub's default) to 300", req.ResponseTimeoutInSeconds))
	}
	if bytes.Equal(bytes.TrimSpace(req.Payload), []byte("null")) {
		req.Payload = nil
	}
	timeout := time.Duration(req.ResponseTimeoutInSeconds) * time.Second
	if timeout == 0 {
		timeout = h.cfg.MethodTimeout
	}
	// The connection had a deadline for its handshake and request; the
	// answer may take the whole timeout.
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Time{})
	rc.SetWriteDeadline(time.Now().Add(timeout + 10*time.Second))
	res, err := h.InvokeMethod(r.Context(), target, req.MethodName, req.Payload, timeout)
	switch {
	case err == nil:
		out, _ := json.Marshal(map[string]any{"status": res.Status, "payload": res.Payload})
		return http.StatusOK, out
	case fault.Is(err, fault.NotFound):
		return methodError(http.StatusNotFound, err.Error())
	case fault.Is(err, fault.Timeout):
		return methodError(http.StatusGatewayTimeout, err.Error())
	case fault.Is(err, fault.Invalid):
		return methodError(http.StatusBadRequest, err.Error())
	case fault.Is(err, fault.TooLarge):
		return methodError(http.StatusRequestEntityTooLarge, err.Error())
	}
	return methodError(http.StatusInternalServerError, err.Error())
}

// methodTarget is the device or module a /twins/.../methods path names
// (its parts URL-decoded).
func methodTarget(path string) (string, bool) {
	rest, ok := strings.CutPrefix(path, "/twins/")
	if !ok {
		return "", false
	}
	rest, ok = strings.CutSuffix(strings.TrimSuffix(rest, "/"), "/methods")
	if !ok {
		return "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 1 && (len(parts) != 3 || parts[1] != "modules") {
		return "", false
	}
	ids := []string{parts[0]}
	if len(parts) == 3 {
		ids = append(ids, parts[2])
	}
	for i, p := range ids {
		id, err := url.PathUnescape(p)
		if err != nil || id == "" || strings.Contains(id, "/") {
			return "", false
		}
		ids[i] = id
	}
	return strings.Join(ids, "/"), true
}

// methodError is an error answer in IoT Hub's shape, which the Azure
// IoT SDKs parse into their error types (DeviceNotFoundError...).
func methodError(status int, msg string) (int, []byte) {
	code := map[int]string{
		http.StatusBadRequest:            "ArgumentInvalid",
		http.StatusUnauthorized:          "IotHubUnauthorizedAccess",
		http.StatusNotFound:              "DeviceNotFound",
		http.StatusMethodNotAllowed:      "InvalidOperation",
		http.StatusRequestEntityTooLarge: "MessageTooLarge",
		http.StatusGatewayTimeout:        "GatewayTimeout",
	}[status]
	if code == "" {
		code = "ServerError"
	}
	// The SDKs split Message at the first ";" into the code and the text.
	body, _ := json.Marshal(map[string]string{"Message": "ErrorCode:" + code + ";" + strings.ReplaceAll(msg, ";", ","), "ExceptionMessage": ""})
	return status, body
}
