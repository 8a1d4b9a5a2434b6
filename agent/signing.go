package agent

import (
	"context"
	"fmt"
	"strings"

	"ledge/agent/manifest"
)

// The signing and version policy of remote sources (the upstream topic,
// the polled URL). With agent.trustedKeys set, a remote manifest must be
// signed and carry a version newer than every version applied or received
// from a remote so far (the high-water mark is persisted, so it holds
// across restarts): an old signed manifest cannot be replayed, and one
// without a version cannot override a versioned one. Without trusted
// keys, remote deployments are taken unsigned; ledge warns about it once
// at start and in the reported state.

// unsignedRemoteWarning is the warning shown while remote deployments
// are taken unsigned.
const unsignedRemoteWarning = "remote deployments are not signed: whoever can publish on the deployment topic, serve the deployment URL or set this device's twins on the parent runs containers on this appliance; set agent.trustedKeys (see docs/security.md)"

// remoteSources lists the configured remote sources.
func (a *Agent) remoteSources() []string {
	var out []string
	if a.opts.Upstream != nil && a.cfg.Sources.MQTT.Enabled {
		out = append(out, SourceMQTT)
	}
	if a.cfg.Sources.HTTP.URL != "" {
		out = append(out, SourceHTTP)
	}
	if a.opts.Parent != nil {
		out = append(out, SourceParent)
	}
	return out
}

// signingReport is the reported state's "signing".
func (a *Agent) signingReport() *SigningReport {
	r := &SigningReport{Required: len(a.trusted) > 0, RemoteSources: a.remoteSources()}
	for _, k := range a.trusted {
		r.Keys = append(r.Keys, k.ID)
	}
	if !r.Required && len(r.RemoteSources) > 0 {
		r.Warning = unsignedRemoteWarning
	}
	return r
}

// unsignedReason says why deployment d runs unsigned although signing is
// on, or "".
func (a *Agent) unsignedReason(d *Deployment) string {
	if len(a.trusted) == 0 || d == nil || d.Signer != "" {
		return ""
	}
	return "applied before signing was turned on (agent.trustedKeys): apply a signed deployment to replace it"
}

// warnSigning logs, once at start, what the signing policy leaves open.
func (a *Agent) warnSigning() {
	if r := a.signingReport(); r.Warning != "" {
		a.log.Warn(unsignedRemoteWarning, "sources", strings.Join(r.RemoteSources, ","))
	}
	a.mu.Lock()
	d := a.current
	a.mu.Unlock()
	if why := a.unsignedReason(d); why != "" {
		a.log.Warn("the current deployment is unsigned: "+why, "id", d.ID, "version", d.Version, "source", d.Source)
	}
}

// newer applies the version rule of remote sources: a newer version wins,
// the same one again is ignored. With trusted keys, a manifest without a
// version, or with an older one (or the same version with other
// content), is refused; without them, a manifest without a version is
// applied when its content changed since the last one from a remote, and
// an older one is ignored.
func (a *Agent) newer(ctx context.Context, c *candidate) error {
	best, _ := a.store.state(ctx, "remote_version")
	if cur := a.current; cur != nil && manifest.CompareVersions(cur.Version, best) > 0 {
		best = cur.Version
	}
	lastDigest, _ := a.store.state(ctx, "remote_digest")
	signed := len(a.trusted) > 0
	if c.man.Version == "" {
		switch {
		case lastDigest == c.digest:
			return errIgnored
		case signed:
			return fmt.Errorf("a remote manifest must carry a version when agent.trustedKeys is set (one newer than %q): without one, an old signed manifest could be replayed", best)
		}
		return nil
	}
	if manifest.CompareVersions(c.man.Version, best) <= 0 {
		same := lastDigest == c.digest
		if cur := a.current; cur != nil && cur.Digest == c.digest {
			same = true
		}
		if signed && !same {
			return fmt.Errorf("version %q is not newer than %q, the newest applied or received from a remote: refused (a replayed signed manifest? give a new one a higher version)", c.man.Version, best)
		}
		if cur := a.current; cur != nil && cur.Version == c.man.Version && cur.Digest != c.digest {
			a.log.Warn("remote manifest has the current version but other content: ignored (give it a newer version)", "version", c.man.Version)
		}
		return fmt.Errorf("version %q is not newer than %q: %w", c.man.Version, best, errIgnored)
	}
	return nil
}
