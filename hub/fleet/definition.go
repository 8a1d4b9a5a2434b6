package fleet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"ledge/hub/route"
)

// Definition is a fleet deployment, as `ledge fleet deploy` writes it and
// Azure IoT Hub's automatic deployments mean it: a manifest, a target
// condition over device documents, a priority (the highest wins on a
// device that several target; a tie goes to the newest), and a rollout
// policy.
type Definition struct {
	Name string `json:"name"`
	// Generation goes up with every change of the definition (a new
	// manifest, pause, resume, rollback): the newest wins on the broker.
	Generation int64 `json:"generation"`
	// Created is when the deployment was first made (priority ties).
	Created time.Time `json:"created"`
	// Target is a condition in the route language over the device
	// document, e.g. tags.site = 'berlin' AND tags.hw = 'pi5'.
	Target   string `json:"target,omitempty"`
	Priority int    `json:"priority,omitempty"`
	Rollout  Policy `json:"rollout,omitzero"`
	// State is active, paused (no new wave starts; assigned devices keep
	// it), rolledBack (every device on it goes back) or deleted (a
	// [Tombstone]: the deployment is gone).
	State string `json:"state"`
	// Manifest is the deployment manifest as written (native or Azure);
	// the controller gives each device a copy with a version of its own
	// (see [Sealer]).
	Manifest string `json:"manifest,omitempty"`

	cond *route.Condition
}

// Definition states.
const (
	StateActive     = "active"
	StatePaused     = "paused"
	StateRolledBack = "rolledBack"
	StateDeleted    = "deleted"
)

// Tombstone is what `ledge fleet delete` retains in a deployment's place:
// a signed definition with the state deleted and a generation above the
// deployment's, and nothing else. It is signed and it goes up like any
// change, so the controller acts on it (the devices take on their next
// deployment by priority; those no other targets keep what they run) and
// a replay of the deployment's older signed definition stays refused; a
// `ledge fleet deploy` of the name later gives a generation above it and
// supersedes it.
func Tombstone(name string, generation int64, created time.Time) *Definition {
	return &Definition{Name: name, Generation: generation, Created: created, State: StateDeleted}
}

// Policy is how a deployment rolls out.
type Policy struct {
	// Waves are cumulative sizes: a count ("1", "10") or a percent of the
	// targeted devices ("10%", "100%"). The last is always 100%.
	Waves []string `json:"waves"`
	// Soak is how long a wave must stay converged before the next starts.
	Soak Duration `json:"soak"`
	// AbortAfter stops the rollout and rolls back its devices once this
	// many devices failed: a count ("2") or a percent of the devices
	// it was given to so far ("5%"). Empty: never abort.
	AbortAfter string `json:"abortAfter,omitempty"`
}

// Duration is a time.Duration written as "30s" in JSON.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New("want a duration like \"30s\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("%q is not a duration like \"30s\"", s)
	}
	*d = Duration(v)
	return nil
}

// MaxDefinitionSize bounds a definition on the broker (a manifest is at
// most a few hundred KiB).
const MaxDefinitionSize = 1 << 20

// size is a wave size or threshold: a count or a percent.
type size struct {
	n       int
	percent float64
}

func parseSize(s string) (size, error) {
	s = strings.TrimSpace(s)
	if p, ok := strings.CutSuffix(s, "%"); ok {
		f, err := strconv.ParseFloat(p, 64)
		if err != nil || math.IsNaN(f) || f <= 0 || f > 100 {
			return size{}, fmt.Errorf("%q: a percent is from 0 (exclusive) to 100%%", s)
		}
		return size{percent: f}, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return size{}, fmt.Errorf("%q: want a count (1, 10) or a percent (50%%)", s)
	}
	return size{n: n}, nil
}

// of resolves a size against a total: a percent rounds up (at least 1),
// a count is at most the total.
func (s size) of(total int) int {
	if s.percent > 0 {
		return min(total, max(1, int(math.Ceil(s.percent*float64(total)/100-1e-9))))
	}
	return min(total, s.n)
}

// ParseWaves reads "1,10%,100%" into a policy's waves; a last wave below
// 100% gets 100% added.
func ParseWaves(s string) ([]string, error) {
	var out []string
	for _, w := range strings.Split(s, ",") {
		if strings.TrimSpace(w) == "" {
			continue
		}
		if _, err := parseSize(w); err != nil {
			return nil, err
		}
		out = append(out, strings.TrimSpace(w))
	}
	if len(out) == 0 || out[len(out)-1] != "100%" {
		out = append(out, "100%")
	}
	return out, nil
}

// Validate checks a definition, naming the field, and compiles its target.
func (d *Definition) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if !ValidName(d.Name) {
		bad("name", "%q: 1-128 characters, no '/', '+', '#', '$' or spaces, not \"fleet\"", d.Name)
	}
	if d.Generation < 1 {
		bad("generation", "must be at least 1, got %d", d.Generation)
	}
	if d.State == StateDeleted {
		// A tombstone: its name and generation are what it says.
		return errors.Join(errs...)
	}
	if d.Target == "" {
		bad("target", "a condition is required, e.g. tags.site = 'berlin' (true targets every device)")
	} else if c, err := route.ParseTwinQuery(d.Target); err != nil {
		bad("target", "%v", err)
	} else {
		d.cond = c
	}
	if d.Priority < 0 {
		bad("priority", "must not be negative, got %d", d.Priority)
	}
	if len(d.Rollout.Waves) == 0 {
		bad("rollout.waves", "at least one wave, e.g. [\"100%%\"]")
	}
	prev := size{}
	for i, w := range d.Rollout.Waves {
		s, err := parseSize(w)
		if err != nil {
			bad(fmt.Sprintf("rollout.waves[%d]", i), "%v", err)
			continue
		}
		if i == len(d.Rollout.Waves)-1 && (s.percent != 100) {
			bad(fmt.Sprintf("rollout.waves[%d]", i), "the last wave must be 100%%, got %q", w)
		}
		if (s.percent > 0) == (prev.percent > 0) && (s.percent < prev.percent || s.n < prev.n) && i > 0 {
			bad(fmt.Sprintf("rollout.waves[%d]", i), "waves are cumulative: %q is below the wave before", w)
		}
		prev = s
	}
	if d.Rollout.AbortAfter != "" {
		if _, err := parseSize(d.Rollout.AbortAfter); err != nil {
			bad("rollout.abortAfter", "%v", err)
		}
	}
	switch d.State {
	case StateActive, StatePaused, StateRolledBack:
	default:
		bad("state", "%q: want active, paused, rolledBack or deleted", d.State)
	}
	if strings.TrimSpace(d.Manifest) == "" {
		bad("manifest", "is empty")
	}
	return errors.Join(errs...)
}

// Matches evaluates the target condition on a device document.
func (d *Definition) Matches(doc []byte) bool {
	if d.cond == nil {
		return false
	}
	return d.cond.EvalDoc(doc).IsTrue()
}

// Signed is a definition with its signature, as it is retained on the
// broker: {"definition": "<JSON text>", "signature": {...}}.
type Signed struct {
	Definition string          `json:"definition"`
	Signature  json.RawMessage `json:"signature"`
}

// Signer signs a definition's bytes (the fleet key, ed25519).
type Signer interface {
	Sign(data []byte) (json.RawMessage, error)
}

// Verifier checks a signature over data against the fleet's trusted keys
// and returns the signing key's id.
type Verifier interface {
	Verify(data []byte, sig json.RawMessage) (keyID string, err error)
}

// Seal signs d into the payload retained on the broker.
func Seal(d *Definition, s Signer) ([]byte, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	text, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	sig, err := s.Sign(text)
	if err != nil {
		return nil, err
	}
	return json.Marshal(Signed{Definition: string(text), Signature: sig})
}

// Open reads a retained definition: the envelope, the signature (against
// v), the definition and its validity. name is the topic's name, which the
// definition must carry.
func Open(payload []byte, v Verifier, name string) (*Definition, string, error) {
	if len(payload) > MaxDefinitionSize {
		return nil, "", fmt.Errorf("definition over %d bytes", MaxDefinitionSize)
	}
	var env Signed
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil {
		return nil, "", fmt.Errorf("not a signed definition ({\"definition\", \"signature\"}): %v", err)
	}
	if len(env.Signature) == 0 || string(env.Signature) == "null" {
		return nil, "", errors.New("definition is not signed")
	}
	signer, err := v.Verify([]byte(env.Definition), env.Signature)
	if err != nil {
		return nil, "", err
	}
	var d Definition
	dec = json.NewDecoder(strings.NewReader(env.Definition))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return nil, signer, fmt.Errorf("definition: %v", err)
	}
	if err := d.Validate(); err != nil {
		return nil, signer, err
	}
	if name != "" && d.Name != name {
		return nil, signer, fmt.Errorf("definition %q is retained under the name %q: refused", d.Name, name)
	}
	return &d, signer, nil
}

// WaveTarget is how many devices waves 0..i admit together, out of total.
func (p Policy) WaveTarget(i, total int) int {
	if i >= len(p.Waves) {
		return total
	}
	s, err := parseSize(p.Waves[i])
	if err != nil {
		return 0
	}
	return s.of(total)
}

// Aborts reports whether failed devices out of given reach AbortAfter.
func (p Policy) Aborts(failed, given int) bool {
	if p.AbortAfter == "" || failed == 0 {
		return false
	}
	s, err := parseSize(p.AbortAfter)
	if err != nil {
		return false
	}
	if s.percent > 0 {
		return float64(failed)*100/float64(max(given, 1)) >= s.percent
	}
	return failed >= s.n
}

// NextGeneration is the generation a change of deployment name gets:
// above its definition's (or its tombstone's) and above every generation
// the broker's records name (a definition refused as a replay included),
// so that the controller takes it.
func NextGeneration(s *Snapshot, name string) int64 {
	g := s.recordedGenerations()[name]
	if d := s.Definitions[name]; d != nil {
		g = max(g, d.Generation)
	}
	if d := s.Deleted[name]; d != nil {
		g = max(g, d.Generation)
	}
	return g + 1
}

// recordedGenerations is, for each deployment, the highest generation
// the controller's records on the broker name: its rollout, and the
// assignments of devices to it.
func (s *Snapshot) recordedGenerations() map[string]int64 {
	g := map[string]int64{}
	for name, r := range s.Rollouts {
		g[name] = max(g[name], r.Generation)
	}
	for _, d := range s.Devices {
		if a := d.Assignment; a != nil {
			g[a.Deployment] = max(g[a.Deployment], a.Generation)
		}
	}
	return g
}

// refuseOlder moves to Invalid each definition (or tombstone) whose
// generation is below floor(name): a signed definition replayed (an
// older generation put back on its topic) would roll an old manifest out
// again under a new version, which devices take, or bring a deleted
// deployment back; a replayed tombstone would delete one deployed again.
func (s *Snapshot) refuseOlder(floor func(name string) int64) {
	for _, m := range []map[string]*Definition{s.Definitions, s.Deleted} {
		for name, d := range m {
			if f := floor(name); d.Generation < f {
				delete(m, name)
				delete(s.Payloads, name)
				if s.Replayed == nil {
					s.Replayed = map[string]bool{}
				}
				s.Replayed[name] = true
				s.Invalid[name] = fmt.Sprintf("generation %d is older than generation %d, seen before: a replayed definition? refused (ledge fleet deploy %s gives it generation %d)",
					d.Generation, f, name, f+1)
			}
		}
	}
}
