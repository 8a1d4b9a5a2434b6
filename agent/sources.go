package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"ledge/internal/redact"
	"net/http"
	"strings"
	"sync"
	"time"

	"ledge/agent/manifest"
)

// offer is a manifest received from a remote source.
type offer struct {
	source string
	data   []byte
	sig    *Signature
}

// takeOffers applies remote manifests one at a time, in arrival order;
// a source that delivers faster than they apply keeps only its latest.
func (a *Agent) takeOffers(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case o := <-a.offers:
			err := a.offerRemote(ctx, o.source, o.data, o.sig)
			switch {
			case errors.Is(err, errIgnored):
				a.log.Debug("remote manifest ignored", "source", o.source, "why", err)
			case err != nil:
				// reject has logged and reported it.
			}
		}
	}
}

// deliver queues an offer, dropping the oldest queued one when full.
func (a *Agent) deliver(o offer) {
	for {
		select {
		case a.offers <- o:
			return
		default:
			select {
			case <-a.offers:
			default:
			}
		}
	}
}

// topic fills {device} in a configured topic.
func (a *Agent) topic(t string) string { return strings.ReplaceAll(t, "{device}", a.opts.DeviceID) }

// subscribeUpstream takes deployments from the retained message on the
// device's deployment topic.
func (a *Agent) subscribeUpstream(u Upstream) (func(), error) {
	topic := a.topic(a.cfg.Sources.MQTT.Topic)
	cancel, err := u.Subscribe(topic, func(payload []byte) {
		if len(payload) == 0 {
			return // a cleared retained message
		}
		if len(payload) > MaxEnvelope {
			// Refused before anything is copied or parsed.
			_, _, err := Unwrap(payload)
			a.reject(nil, payload, SourceMQTT, err)
			return
		}
		data, sig, err := Unwrap(bytes.Clone(payload))
		if err != nil {
			a.reject(nil, payload, SourceMQTT, err)
			return
		}
		a.deliver(offer{source: SourceMQTT, data: data, sig: sig})
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", topic, err)
	}
	a.log.Info("deployments from upstream", "topic", topic)
	return cancel, nil
}

// publishReported sends the reported state upstream (retained); false
// when that failed.
func (a *Agent) publishReported(ctx context.Context, data []byte) bool {
	u := a.opts.Upstream
	if u == nil || !a.cfg.Sources.MQTT.Enabled || a.cfg.Sources.MQTT.ReportedTopic == "" {
		return true
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := u.Publish(pctx, a.topic(a.cfg.Sources.MQTT.ReportedTopic), data, true); err != nil {
		a.log.Debug("publish reported state upstream", "err", err)
		return false
	}
	return true
}

// pollHTTP fetches the manifest URL every interval, with If-None-Match,
// and offers what changed.
func (a *Agent) pollHTTP(ctx context.Context) {
	cfg := a.cfg.Sources.HTTP
	tr := http.DefaultTransport.(*http.Transport).Clone()
	defer tr.CloseIdleConnections()
	p := &httpPoller{cfg: cfg, client: &http.Client{Timeout: cfg.Timeout, Transport: tr}, needSig: len(a.trusted) > 0}
	t := time.NewTimer(0)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		o, err := p.poll(ctx)
		switch {
		case err != nil:
			if err.Error() != lastErr {
				a.log.Warn("deployment URL", "url", redact.URL(cfg.URL), "err", err)
			}
			lastErr = err.Error()
		case o != nil:
			lastErr = ""
			a.deliver(*o)
		default:
			lastErr = ""
		}
		t.Reset(cfg.Interval)
	}
}

// httpPoller fetches a manifest URL with ETag caching. Its methods are
// called from one goroutine.
type httpPoller struct {
	cfg     HTTPSourceConfig
	client  *http.Client
	needSig bool

	mu   sync.Mutex // guards etag
	etag string
}

// poll returns the manifest when it changed since the last poll, nil when
// not.
func (p *httpPoller) poll(ctx context.Context) (*offer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.cfg.URL, nil)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	if p.etag != "" {
		req.Header.Set("If-None-Match", p.etag)
	}
	p.mu.Unlock()
	req.Header.Set("Accept", "application/json, application/yaml, */*")
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotModified:
		return nil, nil
	case http.StatusOK:
	default:
		return nil, fmt.Errorf("GET %s: %s", redact.URL(p.cfg.URL), resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, manifest.MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", redact.URL(p.cfg.URL), err)
	}
	if len(body) > manifest.MaxSize {
		return nil, fmt.Errorf("GET %s: manifest over %d bytes", redact.URL(p.cfg.URL), manifest.MaxSize)
	}
	data, sig, err := Unwrap(body)
	if err != nil {
		return nil, err
	}
	if sig == nil && (p.needSig || p.cfg.SignatureURL != "") {
		if sig, err = p.signature(ctx); err != nil {
			return nil, err
		}
	}
	p.mu.Lock()
	p.etag = resp.Header.Get("ETag")
	p.mu.Unlock()
	return &offer{source: SourceHTTP, data: data, sig: sig}, nil
}

// signature fetches the detached signature; a 404 means unsigned.
func (p *httpPoller) signature(ctx context.Context) (*Signature, error) {
	u := p.cfg.SignatureURL
	if u == "" {
		u = p.cfg.URL + ".sig"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, nil
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, err
	}
	return ParseSignature(data)
}
