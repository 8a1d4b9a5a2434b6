package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"time"
	"unicode/utf8"

	"ledge/agent/manifest"
)

// Deployments from the parent (IoT Hub, or a parent ledge), as edgeAgent
// takes them: the desired properties of this device's $edgeAgent and
// $edgeHub module twins, and of ledge's own $ledge twin when the parent
// has one (version, models, pipelines, and the signature). They are put
// together into one modulesContent manifest, always the same bytes for
// the same twins, and offered like any remote manifest: checks, the
// signature and version policy, rollback. The reported state goes back
// as the $edgeAgent twin's reported properties, in Azure's shape.

// SourceParent is a deployment from the parent's twins.
const SourceParent = "parent"

// Parent is the link to this device's parent (implemented by the hub's
// upstream bridge in azure mode).
type Parent interface {
	// WatchDesired follows the desired properties of this device's module
	// twins named in modules. handler gets all of them (a JSON object
	// each, with the twin's $version; nil for a twin the parent does not
	// have), once after every connection to the parent (a full read) and
	// again whenever one changes. It must return quickly. cancel stops
	// following.
	WatchDesired(modules []string, handler func(desired map[string]json.RawMessage)) (cancel func(), err error)
	// ReportProperties sends a JSON merge patch of the reported properties
	// of this device's module twin module. It fails while the parent is
	// unreachable; the agent sends again.
	ReportProperties(ctx context.Context, module string, patch json.RawMessage) error
}

// Twin names the parent's deployment is read from.
const (
	TwinEdgeAgent = "$edgeAgent"
	TwinEdgeHub   = "$edgeHub"
)

// ParentTwins are the twins a deployment from the parent is made of.
var ParentTwins = []string{TwinEdgeAgent, TwinEdgeHub, manifest.LedgeTwin}

// signatureKey is where the $ledge twin carries the manifest's signature.
const signatureKey = "signature"

// TwinManifest puts the desired properties of the parent's twins together
// into the manifest they mean, and returns its bytes (canonical JSON, so
// the same twins always give the same bytes: what a signature covers) and
// the signature the $ledge twin carries, if any. $version and $metadata
// are not part of it. version is the $edgeAgent twin's $version. It
// returns nil data when $edgeAgent has no desired properties (nothing is
// deployed).
func TwinManifest(desired map[string]json.RawMessage) (data []byte, sig *Signature, version int64, err error) {
	mc := map[string]any{}
	for _, id := range ParentTwins {
		raw := desired[id]
		if len(bytes.TrimSpace(raw)) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
			continue
		}
		var d map[string]any
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&d); err != nil {
			return nil, nil, 0, fmt.Errorf("twin %s: desired properties are not a JSON object: %w", id, err)
		}
		if id == TwinEdgeAgent {
			if n, ok := d["$version"].(json.Number); ok {
				version, _ = n.Int64()
			}
		}
		delete(d, "$version")
		delete(d, "$metadata")
		if id == manifest.LedgeTwin {
			if s, ok := d[signatureKey]; ok {
				delete(d, signatureKey)
				b, _ := json.Marshal(s)
				if sig, err = ParseSignature(b); err != nil {
					return nil, nil, 0, fmt.Errorf("twin %s: %s: %w", id, signatureKey, err)
				}
			}
		}
		if len(d) == 0 {
			continue
		}
		mc[id] = map[string]any{"properties.desired": d}
	}
	if mc[TwinEdgeAgent] == nil {
		return nil, nil, version, nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(map[string]any{"modulesContent": mc}); err != nil {
		return nil, nil, 0, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), sig, version, nil
}

// TwinsOf splits an Azure manifest into the desired properties of the
// twins it sets ($edgeAgent, $edgeHub, $ledge and module twins), as IoT
// Hub does when it applies a deployment: what `ledge hub set-modules`
// writes to a child's twins, and what `ledge deploy sign --twins` signs
// (with TwinManifest).
func TwinsOf(data []byte) (map[string]json.RawMessage, error) {
	m, err := manifest.Parse(data)
	if err != nil {
		return nil, err
	}
	if m.Format != manifest.FormatAzure {
		return nil, fmt.Errorf("not an Azure modulesContent manifest: twins are set from one")
	}
	std, err := manifest.StandardizeJSONC(data)
	if err != nil {
		return nil, err
	}
	// Where manifest.Parse (and the Azure CLI) finds the deployment: in
	// "content" first, under modulesContent, else moduleContent.
	type holder struct {
		ModulesContent map[string]map[string]json.RawMessage `json:"modulesContent"`
		ModuleContent  map[string]map[string]json.RawMessage `json:"moduleContent"`
	}
	var doc struct {
		holder
		Content *holder `json:"content"`
	}
	if err := json.Unmarshal(std, &doc); err != nil {
		return nil, fmt.Errorf("not an Azure modulesContent manifest: %w", err)
	}
	var mc map[string]map[string]json.RawMessage
	for _, h := range []*holder{doc.Content, &doc.holder} {
		if h != nil && mc == nil {
			mc = h.ModulesContent
			if mc == nil {
				mc = h.ModuleContent
			}
		}
	}
	out := map[string]json.RawMessage{}
	for id, entry := range mc {
		for k, v := range entry {
			if k == "properties.desired" || (len(k) == len("properties.desired") && bytes.EqualFold([]byte(k), []byte("properties.desired"))) {
				out[id] = v
			}
		}
	}
	return out, nil
}

// parentLink is the agent's side of the parent: what it last read and
// reported.
type parentLink struct {
	p Parent

	mu sync.Mutex // guards the fields below
	// desiredVersion is the $edgeAgent twin's $version last acted on.
	desiredVersion int64
	// hubVersion is the $edgeHub twin's $version last acted on; 0 while
	// that twin has no desired properties (then nothing is reported on it).
	hubVersion int64
	// hubReported is what the parent has of $edgeHub's reported
	// properties, as reported does for $edgeAgent.
	hubReported map[string]any
	// reported is what the parent has of the reported properties, as far
	// as the agent knows (the parent keeps them across reconnections); nil
	// before the first report since ledge started: then the maps the
	// parent may hold from an earlier run are cleared first.
	reported map[string]any
	failed   bool
}

// watchParent takes deployments from the parent's twins.
func (a *Agent) watchParent(p Parent) (func(), error) {
	a.parent = &parentLink{p: p}
	cancel, err := p.WatchDesired(ParentTwins, func(desired map[string]json.RawMessage) {
		data, sig, version, err := TwinManifest(desired)
		a.parent.mu.Lock()
		a.parent.desiredVersion = version
		a.parent.hubVersion = twinVersion(desired[TwinEdgeHub])
		a.parent.mu.Unlock()
		switch {
		case err != nil:
			a.reject(nil, []byte(fmt.Sprint(desired)), SourceParent, err)
		case data == nil:
			a.log.Debug("the parent's $edgeAgent twin has no deployment yet")
		case len(data) > MaxEnvelope:
			_, _, err := Unwrap(data)
			a.reject(nil, data, SourceParent, err)
		default:
			a.deliver(offer{source: SourceParent, data: data, sig: sig})
		}
		a.reportNow()
	})
	if err != nil {
		return nil, fmt.Errorf("parent twins: %w", err)
	}
	a.log.Info("deployments from the parent's twins", "twins", ParentTwins)
	return cancel, nil
}

// twinVersion is the $version of a twin's desired properties; 0 when
// there are none.
func twinVersion(raw json.RawMessage) int64 {
	var d struct {
		Version json.Number `json:"$version"`
	}
	if json.Unmarshal(raw, &d) != nil {
		return 0
	}
	v, _ := d.Version.Int64()
	return v
}

// reportNow asks Run to send the reported state soon.
func (a *Agent) reportNow() {
	select {
	case a.reportSoon <- struct{}{}:
	default:
	}
}

// parentReport is the $edgeAgent reported properties: Azure's shape
// (reference §2.1), and ledge's own part under "ledge".
type parentReport struct {
	SchemaVersion      string                  `json:"schemaVersion"`
	Version            VersionInfo             `json:"version"`
	LastDesiredVersion int64                   `json:"lastDesiredVersion"`
	LastDesiredStatus  DesiredStatus           `json:"lastDesiredStatus"`
	Runtime            RuntimeInfo             `json:"runtime"`
	SystemModules      map[string]ModuleReport `json:"systemModules"`
	Modules            map[string]ModuleReport `json:"modules"`
	Ledge              parentLedgeReport       `json:"ledge"`
}

type parentLedgeReport struct {
	Deployment *DeploymentReport        `json:"deployment,omitempty"`
	Rejected   *Rejection               `json:"rejected,omitempty"`
	Sections   map[string]SectionReport `json:"sections,omitempty"`
	Engine     EngineReport             `json:"engine"`
}

// reportParent sends what changed in the reported state to the parent's
// $edgeAgent twin; false when that failed (it is sent again).
func (a *Agent) reportParent(ctx context.Context, rep *Reported) bool {
	l := a.parent
	if l == nil {
		return true
	}
	l.mu.Lock()
	doc := parentReport{SchemaVersion: rep.SchemaVersion, Version: rep.Version, LastDesiredVersion: l.desiredVersion,
		LastDesiredStatus: rep.LastDesiredStatus, Runtime: rep.Runtime, SystemModules: rep.SystemModules, Modules: rep.Modules,
		Ledge: parentLedgeReport{Deployment: rep.Deployment, Rejected: rep.Rejected, Sections: rep.Sections, Engine: rep.Engine}}
	// rep.Modules is the snapshot every reader of Reported shares: the
	// parent's copy is changed, not it.
	doc.Modules = make(map[string]ModuleReport, len(rep.Modules))
	for name, m := range rep.Modules {
		m.Pull = nil // progress changes every second: not worth a twin patch
		doc.Modules[name] = m
	}
	prev := l.reported
	hubVersion := l.hubVersion
	l.mu.Unlock()
	var next map[string]any
	b, err := json.Marshal(doc)
	if err == nil {
		err = json.Unmarshal(b, &next)
	}
	if err != nil {
		a.log.Error("reported state for the parent", "err", err)
		return true
	}
	fitTwinStrings(next)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ok := a.reportEdgeHub(pctx, hubVersion, rep.LastDesiredStatus)
	patch := mergeDiff(prev, next)
	if len(patch) == 0 {
		return ok
	}
	err = nil
	if prev == nil {
		// Modules the parent has from before this start, and that are
		// gone, must go: a merge patch can only remove them by name.
		err = l.p.ReportProperties(pctx, TwinEdgeAgent, json.RawMessage(`{"modules":null,"systemModules":null,"ledge":null}`))
	}
	if err == nil {
		body, _ := json.Marshal(patch)
		err = l.p.ReportProperties(pctx, TwinEdgeAgent, body)
	}
	if err != nil {
		l.mu.Lock()
		if !l.failed {
			a.log.Debug("report to the parent", "err", err)
		}
		l.failed = true
		l.mu.Unlock()
		return false
	}
	l.mu.Lock()
	l.failed = false
	l.reported = next
	l.mu.Unlock()
	return ok
}

// edgeHubReport is the $edgeHub reported properties edgeHub sends (the
// part about its desired properties): a deployment's routes and
// store-and-forward settings are applied or refused with the manifest
// they are part of, so their status is the deployment's.
type edgeHubReport struct {
	SchemaVersion      string        `json:"schemaVersion"`
	LastDesiredVersion int64         `json:"lastDesiredVersion"`
	LastDesiredStatus  DesiredStatus `json:"lastDesiredStatus"`
}

// reportEdgeHub sends what changed of $edgeHub's reported properties,
// when the parent's $edgeHub twin has desired properties; false when that
// failed (it is sent again).
func (a *Agent) reportEdgeHub(ctx context.Context, version int64, status DesiredStatus) bool {
	l := a.parent
	if version == 0 {
		return true
	}
	var next map[string]any
	b, _ := json.Marshal(edgeHubReport{SchemaVersion: "1.1", LastDesiredVersion: version, LastDesiredStatus: status})
	if err := json.Unmarshal(b, &next); err != nil {
		return true
	}
	l.mu.Lock()
	prev := l.hubReported
	l.mu.Unlock()
	patch := mergeDiff(prev, next)
	if len(patch) == 0 {
		return true
	}
	body, _ := json.Marshal(patch)
	if err := l.p.ReportProperties(ctx, TwinEdgeHub, body); err != nil {
		a.log.Debug("report $edgeHub to the parent", "err", err)
		return false
	}
	l.mu.Lock()
	l.hubReported = next
	l.mu.Unlock()
	return true
}

// maxTwinString is the longest string value a twin holds (IoT Hub's 4 KB;
// a parent ledge and IoT Hub refuse a reported patch with a longer one).
const maxTwinString = 4096

// fitTwinStrings shortens the strings in a reported document that are
// over maxTwinString (a long error in a status description), ending them
// with "…", so the parent takes the report.
func fitTwinStrings(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = fitTwinStrings(e)
		}
	case []any:
		for i, e := range x {
			x[i] = fitTwinStrings(e)
		}
	case string:
		if len(x) > maxTwinString {
			cut := maxTwinString - len("…")
			for cut > 0 && !utf8.RuneStart(x[cut]) {
				cut--
			}
			return x[:cut] + "…"
		}
	}
	return v
}

// mergeDiff is the JSON merge patch (RFC 7386) that turns prev into next:
// changed values, and null for keys gone. With prev nil it is next.
func mergeDiff(prev, next map[string]any) map[string]any {
	if prev == nil {
		return next
	}
	out := map[string]any{}
	for k, v := range next {
		pv, had := prev[k]
		switch {
		case !had:
			out[k] = v
		case reflect.DeepEqual(pv, v):
		default:
			pm, ok1 := pv.(map[string]any)
			nm, ok2 := v.(map[string]any)
			if ok1 && ok2 {
				if d := mergeDiff(pm, nm); len(d) > 0 {
					out[k] = d
				}
			} else {
				out[k] = v
			}
		}
	}
	for k := range prev {
		if _, ok := next[k]; !ok {
			out[k] = nil
		}
	}
	return out
}
