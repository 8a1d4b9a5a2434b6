package pipeline

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
)

// webhookAction POSTs the event as JSON.
type webhookAction struct {
	url     string
	headers map[string]string
	client  *http.Client
}

func newWebhookAction(s ActionSpec) *webhookAction {
	return &webhookAction{url: s.URL, headers: s.Headers, client: &http.Client{}}
}

func (a *webhookAction) do(ctx context.Context, e *Event) error {
	body, err := eventJSON(e)
	if err != nil {
		return permanent(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.url, bytes.NewReader(body))
	if err != nil {
		return permanent(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "ledge-pipeline")
	for k, v := range a.headers {
		req.Header.Set(k, v)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return fmt.Errorf("webhook %s: %w", redactURL(a.url), err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode < 300:
		return nil
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout:
		return fmt.Errorf("webhook %s: %s", redactURL(a.url), resp.Status)
	default:
		return permanent(fmt.Errorf("webhook %s: %s", redactURL(a.url), resp.Status))
	}
}

func (a *webhookAction) close() { a.client.CloseIdleConnections() }
