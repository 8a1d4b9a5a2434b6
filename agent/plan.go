package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"

	"ledge/agent/manifest"
)

// Plan is what a manifest would change, against what runs now.
type Plan struct {
	Version  string   `json:"version"`
	Format   string   `json:"format"`
	Digest   string   `json:"digest"`
	Signer   string   `json:"signer,omitempty"`
	Current  string   `json:"current,omitempty"` // the current deployment's version
	Warnings []string `json:"warnings,omitempty"`
	// Notes say how ledge reads the standard parts of an Azure manifest
	// it does not take as written (manifest.Manifest.Notes).
	Notes   []string `json:"notes,omitempty"`
	Changes []Change `json:"changes"`
	// Elevated lists every elevated container setting the modules ask
	// for; a plan has them only when agent.allowElevatedPermissions
	// allows them (otherwise the manifest is refused).
	Elevated []Elevation `json:"elevated,omitempty"`
	// Offline plans were made without the running ledge: every module is
	// new and sections were not validated by their owners.
	Offline bool `json:"offline,omitempty"`
}

// Check verifies a manifest exactly as Apply would and returns its plan
// against what runs now, changing nothing.
func (a *Agent) Check(ctx context.Context, data, sig []byte) (*Plan, error) {
	var s *Signature
	if len(bytes.TrimSpace(sig)) > 0 {
		var err error
		if s, err = ParseSignature(sig); err != nil {
			return nil, err
		}
	}
	c, err := a.verify(ctx, data, s, true)
	if err != nil {
		return nil, err
	}
	return a.plan(ctx, c)
}

func (a *Agent) plan(ctx context.Context, c *candidate) (*Plan, error) {
	a.mu.Lock()
	cur, curMan := a.current, a.currentMan
	a.mu.Unlock()
	p := &Plan{Version: c.man.Version, Format: string(c.man.Format), Digest: c.digest, Signer: c.signer, Warnings: c.man.Warnings, Notes: c.man.Notes,
		Elevated: c.elevated}
	if cur != nil {
		p.Current = cur.Version
	}
	if curMan == nil {
		curMan = &manifest.Manifest{}
	}
	p.Changes = planModules(curMan, c.man, a.rec.snapshot().modules)
	noteUpstream(p.Changes, c.upstream, c.parent)
	p.Changes = append(p.Changes, planTwins(curMan, c.man)...)
	for _, name := range manifest.SectionNames {
		h := a.opts.Sections[name]
		raw, had := c.man.Sections[name], curMan.Sections[name] != nil
		if h == nil || (raw == nil && !had) {
			continue
		}
		ch, err := h.Plan(ctx, raw)
		if err != nil {
			return nil, fmt.Errorf("plan %s: %w", name, err)
		}
		p.Changes = append(p.Changes, ch...)
	}
	return p, nil
}

// noteUpstream says in the plan what $upstream was resolved to.
func noteUpstream(changes []Change, written map[string]string, parent parentRegistry) {
	for i, c := range changes {
		if orig, ok := written[c.Name]; ok && c.Kind == "module" && c.Action != ActionRemove {
			note := fmt.Sprintf("%s: $upstream is %s (%s)", orig, parent.host, parent.from)
			changes[i].Detail = strings.TrimSpace(c.Detail + "; " + note)
			if c.Detail == "" {
				changes[i].Detail = note
			}
		}
	}
}

// PlanOffline reads and verifies a manifest without a running ledge
// (`ledge deploy check --offline`) against the agent config cfg and the
// data dir: signature and privilege policy as the running agent would,
// everything it lists is new, and the sections are listed but not
// validated by their owners. parentHost is the host of hub.upstream
// ("" without a parent), what $upstream stands for.
func PlanOffline(data, sig []byte, cfg Config, dataDir, parentHost string) (*Plan, error) {
	trusted, err := ParseTrustedKeys(cfg.TrustedKeys)
	if err != nil {
		return nil, err
	}
	var s *Signature
	if len(bytes.TrimSpace(sig)) > 0 {
		if s, err = ParseSignature(sig); err != nil {
			return nil, err
		}
	} else if data, s, err = Unwrap(data); err != nil {
		return nil, err
	}
	parent := resolveParent(cfg, parentHost)
	man, upstream, err := parseResolved(data, parent, true)
	if err != nil {
		return nil, err
	}
	signer, err := Verify(trusted, data, s)
	if err != nil {
		return nil, err
	}
	elevated, err := NewPolicy(cfg, dataDir).checkManifest(man)
	if err != nil {
		return nil, err
	}
	p := &Plan{Version: man.Version, Format: string(man.Format), Digest: Digest(data), Signer: signer, Warnings: man.Warnings, Notes: man.Notes, Offline: true,
		Elevated: elevated}
	p.Changes = planModules(&manifest.Manifest{}, man, nil)
	noteUpstream(p.Changes, upstream, parent)
	p.Changes = append(p.Changes, planTwins(&manifest.Manifest{}, man)...)
	for _, name := range manifest.SectionNames {
		if raw := man.Sections[name]; raw != nil {
			for _, item := range sectionItems(name, raw) {
				p.Changes = append(p.Changes, Change{Kind: kindOf(name), Name: item, Action: ActionCreate, Detail: "not validated offline"})
			}
		}
	}
	return p, nil
}

// planModules compares the modules of two deployments and the containers
// that exist.
func planModules(cur, next *manifest.Manifest, running map[string]ModuleReport) []Change {
	var out []Change
	for _, m := range next.Modules {
		old := cur.Module(m.Name)
		_, hasContainer := running[m.Name]
		hasContainer = hasContainer && running[m.Name].ContainerID != ""
		switch {
		case old == nil:
			out = append(out, Change{Kind: "module", Name: m.Name, Action: ActionCreate, Detail: m.Image})
		case !hasContainer && running != nil:
			out = append(out, Change{Kind: "module", Name: m.Name, Action: ActionCreate, Detail: m.Image + " (no container now)"})
		default:
			if d := containerDiff(old, &m); d != "" {
				out = append(out, Change{Kind: "module", Name: m.Name, Action: ActionRecreate, Detail: d})
			} else if d := settingsDiff(old, &m); d != "" {
				out = append(out, Change{Kind: "module", Name: m.Name, Action: ActionUpdate, Detail: d})
			} else {
				out = append(out, Change{Kind: "module", Name: m.Name, Action: ActionUnchanged})
			}
		}
	}
	for _, m := range cur.Modules {
		if next.Module(m.Name) == nil {
			out = append(out, Change{Kind: "module", Name: m.Name, Action: ActionRemove, Detail: m.Image})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// containerDiff names what changed in what a container is made of.
func containerDiff(a, b *manifest.Module) string {
	var d []string
	if a.Image != b.Image {
		d = append(d, fmt.Sprintf("image %s -> %s", a.Image, b.Image))
	}
	if !bytes.Equal(a.CreateOptions, b.CreateOptions) {
		d = append(d, "createOptions changed")
	}
	if !maps.Equal(a.Env, b.Env) {
		d = append(d, "env changed")
	}
	return strings.Join(d, "; ")
}

// settingsDiff names what changed that does not recreate the container.
func settingsDiff(a, b *manifest.Module) string {
	var d []string
	if a.Status != b.Status {
		d = append(d, fmt.Sprintf("status %s -> %s", a.Status, b.Status))
	}
	if a.RestartPolicy != b.RestartPolicy {
		d = append(d, fmt.Sprintf("restartPolicy %s -> %s", a.RestartPolicy, b.RestartPolicy))
	}
	if a.StartupOrder != b.StartupOrder {
		d = append(d, fmt.Sprintf("startupOrder %s -> %s", startupOrderText(a.StartupOrder), startupOrderText(b.StartupOrder)))
	}
	if a.ImagePullPolicy != b.ImagePullPolicy {
		d = append(d, fmt.Sprintf("imagePullPolicy %s -> %s", a.ImagePullPolicy, b.ImagePullPolicy))
	}
	if a.Version != b.Version {
		d = append(d, fmt.Sprintf("version %q -> %q", a.Version, b.Version))
	}
	return strings.Join(d, "; ")
}

// startupOrderText is a module's startupOrder for a plan; unset is the
// largest value, which starts last.
func startupOrderText(o uint32) string {
	if o == manifest.DefaultStartupOrder {
		return "unset (starts last)"
	}
	return strconv.FormatUint(uint64(o), 10)
}

func planTwins(cur, next *manifest.Manifest) []Change {
	var out []Change
	for _, id := range slices.Sorted(maps.Keys(next.Twins)) {
		old, ok := cur.Twins[id]
		switch {
		case !ok:
			out = append(out, Change{Kind: "twin", Name: id, Action: ActionCreate})
		case !bytes.Equal(old, next.Twins[id]):
			out = append(out, Change{Kind: "twin", Name: id, Action: ActionUpdate})
		default:
			out = append(out, Change{Kind: "twin", Name: id, Action: ActionUnchanged})
		}
	}
	return out
}

// kindOf names the things in a section: "pipeline" for pipelines.
func kindOf(section string) string {
	switch section {
	case manifest.SectionModels:
		return "model"
	case manifest.SectionPipelines:
		return "pipeline"
	case manifest.SectionRoutes:
		return "route"
	}
	return section
}

// sectionItems lists the names in a section: object keys, or the "name"
// of each array entry.
func sectionItems(section string, raw json.RawMessage) []string {
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) == nil {
		if section == manifest.SectionStoreAndForward {
			return []string{"settings"}
		}
		return slices.Sorted(maps.Keys(obj))
	}
	var arr []struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	}
	if json.Unmarshal(raw, &arr) == nil {
		var out []string
		for i, e := range arr {
			switch {
			case e.Name == "":
				out = append(out, fmt.Sprintf("[%d]", i))
			case e.Version != "":
				out = append(out, e.Name+"@"+e.Version)
			default:
				out = append(out, e.Name)
			}
		}
		return out
	}
	return []string{section}
}
