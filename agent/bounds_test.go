package agent

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"ledge/agent/manifest"
)

// TestHTTPPollerEndlessBody: the HTTP source reads a manifest through the
// 1 MiB limit: a server that sends without end is refused once the limit
// is passed, and stops being read (it was a 2 MiB body before, which a
// poller reading everything refused as well).
func TestHTTPPollerEndlessBody(t *testing.T) {
	const total = 1 << 30
	var written atomic.Int64
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := []byte(strings.Repeat("# endless manifest\n", 3449)) // ~64 KiB
		for written.Load() < total {
			n, err := w.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}))
	defer ts.Close()
	p := &httpPoller{cfg: HTTPSourceConfig{URL: ts.URL + "/m.yaml"}, client: ts.Client()}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	o, err := p.poll(ctx)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("manifest over %d bytes", manifest.MaxSize)) {
		t.Fatalf("endless body: %+v, %v", o, err)
	}
	// What the server wrote before the poller stopped reading: the limit
	// and what the sockets buffer, not the gigabyte.
	if n := written.Load(); n > 64<<20 {
		t.Errorf("the poller read on: the server wrote %d MiB", n>>20)
	}
}

// hookUpstream is an Upstream whose deployment messages the test hands in.
type hookUpstream struct {
	mu sync.Mutex
	h  func([]byte)
}

func (u *hookUpstream) Subscribe(_ string, h func([]byte)) (func(), error) {
	u.mu.Lock()
	u.h = h
	u.mu.Unlock()
	return func() {}, nil
}

func (u *hookUpstream) Publish(context.Context, string, []byte, bool) error { return nil }

func (u *hookUpstream) send(t *testing.T, payload []byte) {
	t.Helper()
	waitFor(t, 10*time.Second, func() (bool, string) {
		u.mu.Lock()
		defer u.mu.Unlock()
		return u.h != nil, "no subscription"
	})
	u.mu.Lock()
	h := u.h
	u.mu.Unlock()
	h(payload)
}

// TestRemoteManifestsBounded: the MQTT source and the parent's twins
// refuse a manifest over 1 MiB, and a message over the envelope's 4 MiB
// before it is parsed; each is reported as rejected, naming the limit,
// and nothing is deployed.
func TestRemoteManifestsBounded(t *testing.T) {
	up := &hookUpstream{}
	parent := &fakeParent{}
	ta := newTestAgent(t, func(o *Options) {
		o.Upstream, o.Parent = up, parent
		o.Config.Sources.MQTT.Enabled = true
	})
	rejected := func(source, reason string) {
		t.Helper()
		waitFor(t, 20*time.Second, func() (bool, string) {
			r := ta.Reported().Rejected
			return r != nil && r.Source == source && strings.Contains(r.Reason, reason), fmt.Sprintf("%+v", r)
		})
	}
	overManifest := fmt.Sprintf("over the limit of %d", manifest.MaxSize)
	overEnvelope := fmt.Sprintf("over the limit of %d (a manifest is at most %d)", MaxEnvelope, manifest.MaxSize)

	up.send(t, []byte("version: '1'\n"+strings.Repeat(" ", manifest.MaxSize)))
	rejected(SourceMQTT, overManifest)
	up.send(t, []byte("version: '2'\n"+strings.Repeat(" ", MaxEnvelope)))
	rejected(SourceMQTT, overEnvelope)

	twin := func(value int) string {
		return `{"schemaVersion": "1.1", "runtime": {"type": "docker"}, "modules": {"m": {"type": "docker", "status": "running",
  "restartPolicy": "always", "settings": {"image": "` + imgApp + `"}, "env": {"A": {"value": "` + strings.Repeat("x", value) + `"}}}}, "$version": 2}`
	}
	parent.set(map[string]string{TwinEdgeAgent: twin(manifest.MaxSize)})
	rejected(SourceParent, overManifest)
	parent.set(map[string]string{TwinEdgeAgent: twin(MaxEnvelope)})
	rejected(SourceParent, overEnvelope)

	if d := ta.Reported().Deployment; d != nil {
		t.Errorf("a manifest over the limit was deployed: %+v", d)
	}
}
