package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"ledge/hub/azure"
	"ledge/internal/fault"
)

// MaxMethodPayload bounds a direct method payload each way (128 KB).
const MaxMethodPayload = 128 * 1024

type methodCalls struct {
	mu    sync.Mutex // guards calls
	calls map[string]*methodCall
	next  atomic.Uint64
}

type methodCall struct {
	s    *session
	done chan MethodResult
}

// MethodResult is the answer of a direct method.
type MethodResult struct {
	Status  int             `json:"status"`
	Payload json.RawMessage `json:"payload"`
}

// InvokeMethod calls a direct method on a connected device or module
// ("d" or "d/m"). It fails with fault.NotFound (HTTP 404) when the target
// is not connected or not subscribed to methods, and fault.Timeout (504)
// when no answer comes within timeout (0: the configured default).
func (h *Hub) InvokeMethod(ctx context.Context, target, method string, payload json.RawMessage, timeout time.Duration) (MethodResult, error) {
	if timeout <= 0 {
		timeout = h.cfg.MethodTimeout
	}
	if method == "" {
		return MethodResult{}, fault.New(fault.Invalid, "method name is empty")
	}
	if len(payload) > MaxMethodPayload {
		return MethodResult{}, fault.New(fault.TooLarge, "method payload %d bytes, over %d", len(payload), MaxMethodPayload)
	}
	if len(payload) > 0 && !json.Valid(payload) {
		return MethodResult{}, fault.New(fault.Invalid, "method payload is not JSON")
	}
	if len(bytes.TrimSpace(payload)) == 0 {
		// No payload is JSON null on the wire, as IoT Hub sends it: the
		// SDKs parse every request body as JSON (the Node SDK answers an
		// empty one 400 "Invalid request format").
		payload = json.RawMessage("null")
	}
	v, ok := h.byID.Load(target)
	if !ok {
		return MethodResult{}, fault.New(fault.NotFound, "%s is not connected", target)
	}
	s := v.(*session)
	topic := azure.MethodRequestTopic(method, "0")
	if _, sub := subscribedQoS(s, topic); !sub {
		return MethodResult{}, fault.New(fault.NotFound, "%s is connected but not subscribed to direct methods", target)
	}
	rid := strconv.FormatUint(h.methods.next.Add(1), 10)
	call := &methodCall{s: s, done: make(chan MethodResult, 1)}
	h.methods.mu.Lock()
	h.methods.calls[rid] = call
	h.methods.mu.Unlock()
	defer func() {
		h.methods.mu.Lock()
		delete(h.methods.calls, rid)
		h.methods.mu.Unlock()
	}()
	if err := sendTo(s.cl, azure.MethodRequestTopic(method, rid), payload); err != nil {
		return MethodResult{}, fault.New(fault.NotFound, "%s is not connected: %v", target, err)
	}
	h.stats.methods.Add(1)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r, ok := <-call.done:
		if !ok {
			return MethodResult{}, fault.New(fault.NotFound, "%s disconnected before answering %s", target, method)
		}
		return r, nil
	case <-t.C:
		return MethodResult{}, fault.New(fault.Timeout, "%s did not answer %s within %s", target, method, timeout)
	case <-ctx.Done():
		return MethodResult{}, ctx.Err()
	}
}

// respond takes a method response from a client; a response to another
// client's call is ignored.
func (m *methodCalls) respond(s *session, rid string, status int, payload []byte) {
	m.mu.Lock()
	call := m.calls[rid]
	if call == nil || call.s != s {
		m.mu.Unlock()
		return
	}
	delete(m.calls, rid)
	m.mu.Unlock()
	if len(payload) > MaxMethodPayload {
		payload = nil
		status = 413
	}
	var raw json.RawMessage
	if len(payload) > 0 {
		if json.Valid(payload) {
			raw = append(json.RawMessage(nil), payload...)
		} else {
			raw, _ = json.Marshal(string(payload))
		}
	}
	call.done <- MethodResult{Status: status, Payload: raw}
}

// dropClient fails the calls waiting on a client that went away.
func (m *methodCalls) dropClient(s *session) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for rid, c := range m.calls {
		if c.s == s {
			delete(m.calls, rid)
			close(c.done)
		}
	}
}
