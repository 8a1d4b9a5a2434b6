package hub

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode"

	"ledge/hub/azure"
	"ledge/hub/route"
	"ledge/internal/fault"
	"ledge/internal/yamlstrict"
)

// MaxTwinSection is the limit on the desired and on the reported
// properties of one twin, as IoT Hub has it (32 KB each).
const MaxTwinSection = 32 * 1024

// maxImplicitModuleTwins bounds the twins of one device's modules that
// have no identity here (its key authenticates them: a child ledge's
// $edgeAgent, $edgeHub, $ledge and the modules it relays). Each is a row
// of 32 KB at most: unbounded, a device that named a new module at each
// connection filled the disk.
const maxImplicitModuleTwins = 100

// twins keeps device and module twins in hub_twins.
type twins struct {
	db *sql.DB
	mu sync.Mutex // serialises read-modify-write of a twin
}

// Twin is a device or module twin.
type Twin struct {
	Desired         map[string]any `json:"desired"`
	DesiredVersion  int64          `json:"desiredVersion"`
	Reported        map[string]any `json:"reported"`
	ReportedVersion int64          `json:"reportedVersion"`
}

func (t *twins) load(ctx context.Context, name string) (Twin, error) {
	var d, r string
	tw := Twin{Desired: map[string]any{}, Reported: map[string]any{}}
	err := t.db.QueryRowContext(ctx, `SELECT desired, desired_version, reported, reported_version FROM hub_twins WHERE name = ?`, name).
		Scan(&d, &tw.DesiredVersion, &r, &tw.ReportedVersion)
	if errors.Is(err, sql.ErrNoRows) {
		return tw, nil
	}
	if err != nil {
		return tw, fmt.Errorf("load twin %q: %w", name, err)
	}
	if err := json.Unmarshal([]byte(d), &tw.Desired); err != nil {
		return tw, fmt.Errorf("twin %q desired: %w", name, err)
	}
	if err := json.Unmarshal([]byte(r), &tw.Reported); err != nil {
		return tw, fmt.Errorf("twin %q reported: %w", name, err)
	}
	return tw, nil
}

func (t *twins) save(ctx context.Context, name string, tw Twin) error {
	d, _ := json.Marshal(tw.Desired)
	r, _ := json.Marshal(tw.Reported)
	_, err := t.db.ExecContext(ctx, `INSERT INTO hub_twins (name, desired, desired_version, reported, reported_version) VALUES (?,?,?,?,?)
		ON CONFLICT(name) DO UPDATE SET desired=excluded.desired, desired_version=excluded.desired_version,
		reported=excluded.reported, reported_version=excluded.reported_version`, name, d, tw.DesiredVersion, r, tw.ReportedVersion)
	if err != nil {
		return fmt.Errorf("save twin %q: %w", name, err)
	}
	return nil
}

// remove deletes the twin of id and, with modules, the twins of id's
// modules that have no identity here.
func (t *twins) remove(ctx context.Context, id *Identity, modules bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, err := t.db.ExecContext(ctx, `DELETE FROM hub_twins WHERE name = ?`, id.Name); err != nil {
		return err
	}
	if !modules {
		return nil
	}
	_, err := t.db.ExecContext(ctx, `DELETE FROM hub_twins WHERE name LIKE ? ESCAPE '\'
		AND name NOT IN (SELECT name FROM hub_identities)`, likePrefix(id.Device))
	return err
}

// likePrefix is a LIKE pattern for the names under device ("<device>/...").
func likePrefix(device string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(device) + "/%"
}

// roomForImplicit: the twin of module name, which has no identity here,
// may be written: it exists, or device has fewer than
// maxImplicitModuleTwins such twins. Called with t.mu held.
func (t *twins) roomForImplicit(ctx context.Context, device, name string) error {
	var exists int
	err := t.db.QueryRowContext(ctx, `SELECT count(*) FROM hub_twins WHERE name = ?`, name).Scan(&exists)
	if err != nil || exists > 0 {
		return err
	}
	prefix := likePrefix(device)
	var n int
	if err := t.db.QueryRowContext(ctx, `SELECT count(*) FROM hub_twins WHERE name LIKE ? ESCAPE '\'
		AND name NOT IN (SELECT name FROM hub_identities)`, prefix).Scan(&n); err != nil {
		return err
	}
	if n >= maxImplicitModuleTwins {
		return fault.New(fault.Forbidden, "device %s has %d twins of modules without an identity here, the most it may have: register module %s (ledge identity add %s --kind module) if it is one", device, n, name, name)
	}
	return nil
}

// Twin property limits, as IoT Hub has them and edgeHub checks reported
// properties against them (ReportedPropertiesValidator).
const (
	maxTwinDepth     = 10
	maxTwinValue     = 4096 // bytes of a string value
	maxTwinName      = 1024 // bytes of a property name
	maxTwinSafeValue = 1<<52 - 1
	minTwinSafeValue = -1 << 52
)

// mergePatch applies a JSON merge patch to one section. It returns the
// new section or a fault.Invalid / fault.TooLarge error. Every number
// must be one a twin can hold (1e400 is not: saved, it would not load
// again); a patch from a device (check) must also keep to the twin
// property rules.
func mergePatch(section map[string]any, patch []byte, check bool) (map[string]any, map[string]any, error) {
	var p map[string]any
	dec := json.NewDecoder(bytes.NewReader(patch))
	dec.UseNumber()
	if err := dec.Decode(&p); err != nil {
		return nil, nil, fault.New(fault.Invalid, "twin patch is not a JSON object: %v", err)
	}
	delete(p, "$version")
	if err := checkTwinProperties(p, "", 1, check); err != nil {
		return nil, nil, err
	}
	out := cloneMap(section)
	merge(out, p)
	b, _ := json.Marshal(out)
	if len(b) > MaxTwinSection {
		return nil, nil, fault.New(fault.TooLarge, "twin properties would be %d bytes, over the %d byte limit", len(b), MaxTwinSection)
	}
	return out, p, nil
}

// checkTwinProperties checks properties at path (nesting level depth):
// every number must fit a float64, and with rules, the twin property
// rules: names of at most 1 KB without control characters, '.', '$', '#'
// or white space; objects nested at most 10 deep; strings of at most
// 4 KB; integers within ±2^52; no null in an array. The error names the
// property.
func checkTwinProperties(props map[string]any, path string, depth int, rules bool) error {
	for k, v := range props {
		at := yamlstrict.Field(path, k)
		if !rules {
			if err := checkTwinValue(v, at, depth, false); err != nil {
				return err
			}
			continue
		}
		if len(k) > maxTwinName {
			return fault.New(fault.Invalid, "twin property name %.20q...: %d bytes, over %d", k, len(k), maxTwinName)
		}
		if i := strings.IndexFunc(k, func(r rune) bool {
			return unicode.IsControl(r) || unicode.IsSpace(r) || r == '.' || r == '$' || r == '#'
		}); i >= 0 {
			return fault.New(fault.Invalid, "twin property name %s: %q is not allowed in a name", at, k[i:i+1])
		}
		if err := checkTwinValue(v, at, depth, true); err != nil {
			return err
		}
	}
	return nil
}

func checkTwinValue(v any, at string, depth int, rules bool) error {
	switch x := v.(type) {
	case map[string]any:
		if rules && depth >= maxTwinDepth {
			return fault.New(fault.Invalid, "twin property %s: nested deeper than %d levels", at, maxTwinDepth)
		}
		return checkTwinProperties(x, at, depth+1, rules)
	case []any:
		for i, e := range x {
			if rules && e == nil {
				return fault.New(fault.Invalid, "twin property %s: an array may not hold null (item %d)", at, i)
			}
			if err := checkTwinValue(e, yamlstrict.Index(at, i), depth, rules); err != nil {
				return err
			}
		}
	case string:
		if rules && len(x) > maxTwinValue {
			return fault.New(fault.Invalid, "twin property %s: a string of %d bytes, over %d", at, len(x), maxTwinValue)
		}
	case json.Number:
		if _, err := x.Float64(); err != nil {
			return fault.New(fault.Invalid, "twin property %s: number %s is out of range", at, x)
		}
		if !rules || strings.ContainsAny(string(x), ".eE") {
			return nil
		}
		if n, err := x.Int64(); err != nil || n > maxTwinSafeValue || n < minTwinSafeValue {
			return fault.New(fault.Invalid, "twin property %s: integer %s out of range %d to %d", at, x, int64(minTwinSafeValue), int64(maxTwinSafeValue))
		}
	}
	return nil
}

func merge(dst, patch map[string]any) {
	for k, v := range patch {
		if v == nil {
			delete(dst, k)
			continue
		}
		if pm, ok := v.(map[string]any); ok {
			dm, ok := dst[k].(map[string]any)
			if !ok {
				dm = map[string]any{}
			}
			merge(dm, pm)
			dst[k] = dm
			continue
		}
		dst[k] = v
	}
}

func cloneMap(m map[string]any) map[string]any {
	b, _ := json.Marshal(m)
	out := map[string]any{}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	dec.Decode(&out)
	return out
}

func withVersion(m map[string]any, v int64) map[string]any {
	out := make(map[string]any, len(m)+1)
	for k, x := range m {
		out[k] = x
	}
	out["$version"] = v
	return out
}

// twinError answers a twin request with an error status and a body in
// IoT Hub's shape ({"errorCode", "message", "timestampUtc"}): the SDKs
// take a twin response as failed only when its body has an errorCode
// (azure-iot-device-mqtt ignores the status in the topic).
func twinError(s *session, rid string, status int, msg string) {
	code := status * 1000 // IoT Hub's generic codes: 500000 is a server error
	switch status {
	case 400:
		code = 400004 // ArgumentInvalid: the body is not valid
	case 413:
		code = 413001 // MessageTooLarge
	case 500:
		code = 500001 // ServerError
	}
	body, _ := json.Marshal(map[string]any{"errorCode": code, "message": msg,
		"timestampUtc": time.Now().UTC().Format("2006-01-02T15:04:05.0000000Z")})
	sendTo(s.cl, azure.TwinResponseTopic(status, rid, 0), body)
}

// twinGet answers $iothub/twin/GET.
func (h *Hub) twinGet(s *session, rid string) {
	if s.kind != KindDevice && s.kind != KindModule {
		twinError(s, rid, 403, "only a device or module identity has a twin")
		return
	}
	tw, err := h.twins.load(context.Background(), s.name)
	if err != nil {
		h.log.Error("twin get", "identity", s.name, "err", err)
		twinError(s, rid, 500, "the twin could not be read")
		return
	}
	body, _ := json.Marshal(map[string]any{
		"desired":  withVersion(tw.Desired, tw.DesiredVersion),
		"reported": withVersion(tw.Reported, tw.ReportedVersion),
	})
	sendTo(s.cl, azure.TwinResponseTopic(200, rid, 0), body)
}

// twinPatchReported applies a reported patch: 204 with the new version, or
// 400 / 413.
func (h *Hub) twinPatchReported(s *session, rid string, patch []byte) {
	if s.kind != KindDevice && s.kind != KindModule {
		twinError(s, rid, 403, "only a device or module identity has a twin")
		return
	}
	h.twins.mu.Lock()
	tw, err := h.twins.load(context.Background(), s.name)
	if err == nil && s.kind == KindModule && h.ids.get(s.name) == nil {
		err = h.twins.roomForImplicit(context.Background(), s.device, s.name)
	}
	var applied map[string]any
	if err == nil {
		var next map[string]any
		next, applied, err = mergePatch(tw.Reported, patch, true)
		if err == nil {
			tw.Reported = next
			tw.ReportedVersion++
			err = h.twins.save(context.Background(), s.name, tw)
		}
	}
	h.twins.mu.Unlock()
	switch {
	case fault.Is(err, fault.Invalid):
		twinError(s, rid, 400, err.Error())
		return
	case fault.Is(err, fault.TooLarge):
		twinError(s, rid, 413, err.Error())
		return
	case fault.Is(err, fault.Forbidden):
		twinError(s, rid, 403, err.Error())
		return
	case err != nil:
		h.log.Error("twin patch", "identity", s.name, "err", err)
		twinError(s, rid, 500, "the twin could not be written")
		return
	}
	sendTo(s.cl, azure.TwinResponseTopic(204, rid, tw.ReportedVersion), nil)
	if h.parent != nil {
		h.parent.reportUp(s.name, patch) // synced to the parent, as edgeHub does
	}
	// Routes may take reported-property changes (FROM /twinChangeNotifications).
	body, _ := json.Marshal(map[string]any{"version": tw.ReportedVersion, "properties": map[string]any{"reported": applied}})
	sys := map[string]string{"connectionDeviceId": s.device, "contentType": "application/json", "contentEncoding": "utf-8",
		"iothub-MessageType": "twinChangeNotification"}
	if s.module != "" {
		sys["connectionModuleId"] = s.module
	}
	m := &route.Message{Source: "/twinChangeNotifications", Body: body, Sys: sys}
	if len(h.routes.Load().Match(m)) > 0 {
		h.route(m, nil)
	}
}

// twinIdentity is the device or module whose twin name is: an identity,
// or a module of a device that holds its modules' identities (a child
// ledge's $edgeAgent and $edgeHub), or nil.
func (h *Hub) twinIdentity(name string) *Identity {
	if id := h.ids.get(name); id != nil {
		return id
	}
	return h.implicitModule(name)
}

// GetTwin returns the twin of a device or module identity ("d" or "d/m").
func (h *Hub) GetTwin(ctx context.Context, name string) (Twin, error) {
	id := h.twinIdentity(name)
	if id == nil {
		return Twin{}, fault.New(fault.NotFound, "identity %q does not exist", name)
	}
	return h.twins.load(ctx, id.Name)
}

// PatchDesired merges patch (a JSON object; null deletes a key) into the
// desired properties, bumps $version and notifies the client if it is
// connected and subscribed. It returns the new twin.
func (h *Hub) PatchDesired(ctx context.Context, name string, patch []byte) (Twin, error) {
	id := h.twinIdentity(name)
	if id == nil || (id.Kind != KindDevice && id.Kind != KindModule) {
		return Twin{}, fault.New(fault.NotFound, "device or module identity %q does not exist", name)
	}
	h.twins.mu.Lock()
	tw, err := h.twins.load(ctx, id.Name)
	var applied map[string]any
	if err == nil {
		var next map[string]any
		next, applied, err = mergePatch(tw.Desired, patch, false)
		if err == nil {
			tw.Desired = next
			tw.DesiredVersion++
			err = h.twins.save(ctx, id.Name, tw)
		}
	}
	h.twins.mu.Unlock()
	if err != nil {
		return Twin{}, err
	}
	if v, ok := h.byID.Load(id.Name); ok {
		s := v.(*session)
		topic := azure.DesiredPatchTopic(tw.DesiredVersion)
		if _, sub := subscribedQoS(s, topic); sub {
			body, _ := json.Marshal(withVersion(applied, tw.DesiredVersion))
			sendTo(s.cl, topic, body)
		}
	}
	return tw, nil
}

// SetDesired replaces the desired properties (the agent sets a module's
// twin from a manifest), as a patch that also removes keys no longer
// present.
func (h *Hub) SetDesired(ctx context.Context, name string, desired map[string]any) (Twin, error) {
	tw, err := h.GetTwin(ctx, name)
	if err != nil {
		return Twin{}, err
	}
	patch := map[string]any{}
	for k := range tw.Desired {
		patch[k] = nil
	}
	for k, v := range desired {
		patch[k] = v
	}
	b, err := json.Marshal(patch)
	if err != nil {
		return Twin{}, fault.New(fault.Invalid, "desired properties: %v", err)
	}
	return h.PatchDesired(ctx, name, b)
}
