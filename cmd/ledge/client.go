package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// daemon talks to the running ledge through the unix socket in its data
// directory, the same REST API (/api/v1) the dashboard uses; whoever can
// open the socket (mode 0600) is the administrator.
type daemon struct {
	socket string
	client *http.Client
}

// errNotRunning is the error of a request to a socket nobody listens on.
var errNotRunning = errors.New("ledge is not running")

// notRunningError is an error that says ledge is not running in its own
// words; errors.Is(err, errNotRunning) holds.
type notRunningError struct{ error }

func (e notRunningError) Is(target error) bool { return target == errNotRunning }

func notRunning(err error) error { return notRunningError{err} }

// apiError is an error answer of the API.
type apiError struct {
	Status  int
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *apiError) Error() string { return e.Message }

// connectDaemon finds the socket of the running ledge: the one cf's
// flags or $LEDGE_CONFIG name, else the last `ledge run` still alive, else
// the one of ./ledge.yaml or /etc/ledge/ledge.yaml.
func connectDaemon(cf *configFlags) (*daemon, error) {
	cfg, err := cf.load()
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(cfg.DataDir, "ledge.sock")
	if _, err := os.Stat(sock); err != nil {
		if cf.path == "" && cf.dataDir == "" && !cfg.Env {
			return nil, notRunning(fmt.Errorf("no running ledge found: none recorded in %s, and no socket %s (data dir from %s); start it with `ledge run`, or pass the --config or --data-dir it runs with",
				runtimeDir(), sock, cfg.from()))
		}
		return nil, notRunning(fmt.Errorf("ledge is not running with data dir %s (no socket %s; data dir from %s): start it with `ledge run`, or pass the --config or --data-dir it runs with", cfg.DataDir, sock, cfg.from()))
	}
	return &daemon{socket: sock, client: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}}, nil
}

// do sends a request; body may be nil, []byte (sent as is) or a value sent
// as JSON; out, when not nil, receives the JSON answer. An error answer
// becomes an *apiError.
func (d *daemon) do(ctx context.Context, method, path string, body, out any) error {
	return d.doURL(ctx, method, "http://ledge/api/v1"+path, body, out, false)
}

// doURL is do for a full URL; with anyStatus, an error status's JSON body
// is decoded into out too (GET /healthz answers 503 with its report).
func (d *daemon) doURL(ctx context.Context, method, url string, body, out any, anyStatus bool) error {
	path := strings.TrimPrefix(url, "http://ledge")
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.client.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("%w: nothing listens on its socket %s (left by a ledge that was killed or crashed); start it with `ledge run`", errNotRunning, d.socket)
		}
		return fmt.Errorf("ledge at %s: %w", d.socket, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 && !anyStatus {
		var e struct{ Error apiError }
		if json.Unmarshal(data, &e) != nil || e.Error.Message == "" {
			return &apiError{Status: resp.StatusCode, Message: fmt.Sprintf("%s %s: HTTP %d", method, path, resp.StatusCode)}
		}
		e.Error.Status = resp.StatusCode
		return &e.Error
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: bad answer: %w", method, path, err)
		}
	}
	return nil
}

// withTimeout is the context CLI requests run under.
func withTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// statusOf returns the HTTP status of an API error, 0 for other errors.
func statusOf(err error) int {
	var e *apiError
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}
