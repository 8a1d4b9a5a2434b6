package agent

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/distribution/reference"
	"github.com/docker/docker/api/types/registry"

	"ledge/agent/manifest"
)

// pullState is one image pull, owned by the reconciler's goroutine.
type pullState struct {
	ref      string
	progress PullProgress
	done     bool
	err      error
	attempts int
	retryAt  time.Time
	cancel   context.CancelFunc
	// warned is the error last logged at WARN: a retry failing the same
	// way is logged at INFO.
	warned string
}

// pullMsg is news from a pull goroutine.
type pullMsg struct {
	ref      string
	progress *PullProgress
	done     bool
	err      error
}

// ensureImage makes sure the module's image is there, starting a pull in
// the background when it is not (or when the policy asks for one). It sets
// st.waiting while the module must wait.
func (r *reconciler) ensureImage(ctx context.Context, st *modState) {
	m := st.def
	ref := m.Image
	if p := r.pulls[ref]; p != nil {
		switch {
		case !p.done:
			st.waiting, st.pullImage = pullWaiting(p), ref
			return
		case p.err == nil:
			return
		}
		// A failed pull: was the image there anyway?
	}
	id, err := r.eng.imageID(ctx, ref)
	if err != nil {
		st.waiting = "image: " + err.Error()
		return
	}
	switch m.ImagePullPolicy {
	case manifest.PullNever:
		if id == "" {
			r.failPermanently(ctx, st, fmt.Sprintf("image %s is not present and imagePullPolicy is never", ref))
			st.waiting = "image missing"
		}
		return
	case manifest.PullOnCreate:
		if id != "" && !mutableTag(ref) {
			return
		}
	}
	if p := r.pulls[ref]; p != nil && p.done {
		if p.err == nil || id != "" {
			if p.err != nil {
				st.stats.Description = "using the local image; pull failed: " + p.err.Error()
			}
			return
		}
		if permanentPullError(p.err) {
			r.failPermanently(ctx, st, "pull failed: "+p.err.Error())
			st.waiting = "pull failed"
			return
		}
		if r.now().Before(p.retryAt) {
			st.waiting, st.pullImage = fmt.Sprintf("pull of %s failed (%v); retrying at %s", ref, p.err, p.retryAt.Format(time.TimeOnly)), ref
			return
		}
	}
	// Asked to pull (or the image is missing): wait for it; if the pull
	// fails and an image is here, that one is used.
	r.startPull(ctx, ref, r.want.man)
	st.waiting, st.pullImage = pullWaiting(r.pulls[ref]), ref
}

func pullWaiting(p *pullState) string {
	if p.progress.Total > 0 {
		return fmt.Sprintf("pulling %s: %.0f%% of %d bytes", p.ref, p.progress.Percent, p.progress.Total)
	}
	return "pulling " + p.ref
}

// mutableTag reports whether ref names an image by a tag that usually
// moves ("latest" or none); references by digest never move.
func mutableTag(ref string) bool {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return false
	}
	if _, ok := named.(reference.Digested); ok {
		return false
	}
	t, ok := named.(reference.Tagged)
	return !ok || t.Tag() == "latest"
}

// credentialFor finds the manifest's credentials for ref's registry.
func credentialFor(man *manifest.Manifest, ref string) *registry.AuthConfig {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return nil
	}
	c := man.Credential(reference.Domain(named))
	if c == nil {
		return nil
	}
	addr := c.Address
	if !strings.Contains(addr, "://") {
		addr = strings.TrimSuffix(addr, "/")
	}
	return &registry.AuthConfig{Username: c.Username, Password: c.Password, ServerAddress: addr}
}

// startPull pulls ref in the background; news comes back on pullCh.
func (r *reconciler) startPull(ctx context.Context, ref string, man *manifest.Manifest) {
	prev := r.pulls[ref]
	pctx, cancel := context.WithCancel(ctx)
	p := &pullState{ref: ref, cancel: cancel, progress: PullProgress{Image: ref, Status: "starting"}}
	if prev != nil {
		p.attempts, p.warned = prev.attempts, prev.warned
	}
	r.pulls[ref] = p
	auth := credentialFor(man, ref)
	r.log.Info("pulling image", "image", ref, "credentials", auth != nil)
	r.watchProgress()
	send := func(m pullMsg) {
		select {
		case r.pullCh <- m:
		case <-ctx.Done():
		}
	}
	r.pullWG.Go(func() {
		// At most four progress messages a second; the latest is never
		// lost.
		select { // at most agent.pull.concurrency pulls at once
		case r.pullSem <- struct{}{}:
			defer func() { <-r.pullSem }()
		case <-pctx.Done():
			send(pullMsg{ref: ref, done: true, err: pctx.Err()})
			return
		}
		var last time.Time
		var pending *PullProgress
		err := r.eng.pull(pctx, ref, auth, r.cfg.Pull.StallTimeout, func(pp PullProgress) {
			pending = &pp
			if time.Since(last) >= 250*time.Millisecond {
				last, pending = time.Now(), nil
				send(pullMsg{ref: ref, progress: &pp})
			}
		})
		if pending != nil {
			send(pullMsg{ref: ref, progress: pending})
		}
		send(pullMsg{ref: ref, done: true, err: err})
	})
}

// handlePull takes news from a pull.
func (r *reconciler) handlePull(ctx context.Context, m pullMsg) {
	p := r.pulls[m.ref]
	if p == nil || p.done {
		return
	}
	r.watchProgress()
	if m.progress != nil {
		p.progress = *m.progress
		r.bus.publish(Event{Kind: EventPull, Pull: &p.progress})
		for _, st := range r.mods {
			if st.def != nil && st.pullImage == m.ref && st.c == nil {
				st.waiting = pullWaiting(p)
			}
		}
		return
	}
	p.done, p.err = true, m.err
	p.cancel()
	if m.err != nil {
		p.attempts++
		p.retryAt = r.now().Add(min(2*time.Second<<min(p.attempts, 5), time.Minute))
		lvl := slog.LevelWarn
		if m.err.Error() == p.warned {
			lvl = slog.LevelInfo
		}
		p.warned = m.err.Error()
		r.log.Log(ctx, lvl, "image pull failed", "image", m.ref, "err", m.err, "permanent", permanentPullError(m.err), "attempts", p.attempts)
		r.bus.publish(Event{Kind: EventPull, Pull: &PullProgress{Image: m.ref, Status: "failed: " + m.err.Error()}})
	} else {
		p.progress.Status, p.progress.Percent = "done", 100
		r.count.pulledBytes.Add(p.progress.Total)
		r.log.Info("image pulled", "image", m.ref, "bytes", p.progress.Total)
		r.bus.publish(Event{Kind: EventPull, Pull: &p.progress})
	}
	r.reconcile(ctx)
}
