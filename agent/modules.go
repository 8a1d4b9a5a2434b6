package agent

import (
	"bytes"
	"context"
	"fmt"
	"strconv"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"ledge/internal/fault"
)

// on runs f on the reconciler's goroutine and waits for it.
func (a *Agent) on(ctx context.Context, f func(ctx context.Context) error) error {
	errc := make(chan error, 1)
	select {
	case a.rec.reqCh <- func(ctx context.Context) { errc <- f(ctx) }:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// RestartModule stops and starts a module's container now (Azure's
// RestartModule direct method; the dashboard's restart button). It does
// not count as a failure restart.
func (a *Agent) RestartModule(ctx context.Context, name string) error {
	return a.on(ctx, func(ctx context.Context) error {
		r := a.rec
		st := r.mods[name]
		if st == nil || st.def == nil {
			return fault.New(fault.NotFound, "module %q is not in the deployment", name)
		}
		if st.c == nil {
			return fault.New(fault.Conflict, "module %q has no container yet (%s)", name, st.waiting)
		}
		if st.c.Running {
			st.expectStop = true
			if err := r.eng.stop(ctx, st.c.ID, r.cfg.StopTimeout); err != nil {
				return fault.Wrap(fault.Unavailable, err)
			}
		}
		st.stats.LastRestart = r.now()
		r.start(ctx, st, "restarted by request")
		r.publish()
		return nil
	})
}

// ModuleLogs returns the last lines of a module's output (stdout and
// stderr interleaved as Docker keeps them), at most tail lines (0: 100).
func (a *Agent) ModuleLogs(ctx context.Context, name string, tail int) ([]byte, error) {
	m, ok := a.rec.snapshot().modules[name]
	if !ok || m.ContainerID == "" {
		return nil, fault.New(fault.NotFound, "module %q has no container", name)
	}
	if tail <= 0 {
		tail = 100
	}
	rc, err := a.eng.cli.ContainerLogs(ctx, m.ContainerID, container.LogsOptions{ShowStdout: true, ShowStderr: true,
		Tail: strconv.Itoa(tail), Timestamps: false})
	if err != nil {
		return nil, fault.Wrap(fault.Unavailable, fmt.Errorf("logs of %s: %w", name, err))
	}
	defer rc.Close()
	var out bytes.Buffer
	w := &limitWriter{buf: &out, max: 4 << 20}
	if _, err := stdcopy.StdCopy(w, w, rc); err != nil && err != errLimit {
		return nil, fmt.Errorf("logs of %s: %w", name, err)
	}
	return out.Bytes(), nil
}

var errLimit = fmt.Errorf("log limit reached")

// limitWriter stops after max bytes.
type limitWriter struct {
	buf *bytes.Buffer
	max int
}

func (w *limitWriter) Write(p []byte) (int, error) {
	if w.buf.Len()+len(p) > w.max {
		w.buf.Write(p[:max(0, w.max-w.buf.Len())])
		return 0, errLimit
	}
	return w.buf.Write(p)
}
