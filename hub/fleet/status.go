package fleet

import (
	"slices"
	"time"

	"ledge/hub/route"
)

// DeploymentStatus is a deployment as `ledge fleet status` shows it.
type DeploymentStatus struct {
	Name       string       `json:"name"`
	Generation int64        `json:"generation"`
	State      string       `json:"state"`
	Target     string       `json:"target"`
	Priority   int          `json:"priority"`
	Phase      string       `json:"phase"`
	Reason     string       `json:"reason,omitempty"`
	Wave       int          `json:"wave"` // 1-based, the wave in progress
	Soak       string       `json:"soak"`
	AbortAfter string       `json:"abortAfter,omitempty"`
	Targeted   int          `json:"targeted"`
	Applied    int          `json:"applied"`
	Converged  int          `json:"converged"`
	Failed     int          `json:"failed"`
	Pending    int          `json:"pending"`
	Waves      []WaveStatus `json:"waves"`
	// RolledBack are devices that were given another deployment when this
	// one was rolled back or aborted.
	RolledBack []string      `json:"rolledBack,omitempty"`
	Failing    []DeviceError `json:"failing,omitempty"`
	// PendingDevices are the targeted devices not converged or failed on
	// it, with why: offline, not given yet, or the device's state.
	PendingDevices []DevicePending `json:"pendingDevices,omitempty"`
	Updated        time.Time       `json:"updated,omitzero"`
	Controller     string          `json:"controller,omitempty"`
}

// WaveStatus counts one wave: Size is its share as written; Target how
// many devices it admits; Applied how many were given the deployment in
// it; Pending are admitted or to be admitted and not done yet.
type WaveStatus struct {
	Wave      int      `json:"wave"`
	Size      string   `json:"size"`
	Target    int      `json:"target"`
	Applied   int      `json:"applied"`
	Converged int      `json:"converged"`
	Failed    int      `json:"failed"`
	Pending   int      `json:"pending"`
	Devices   []string `json:"devices,omitempty"`
}

// DevicePending is a device the deployment waits for, and why.
type DevicePending struct {
	Device string `json:"device"`
	Why    string `json:"why"`
}

// DeviceError is a device that failed, with its reason.
type DeviceError struct {
	Device string `json:"device"`
	Wave   int    `json:"wave"`
	Error  string `json:"error"`
}

// StatusOf computes a deployment's status from the broker's state (nil
// when there is no such definition).
func StatusOf(s *Snapshot, name string) *DeploymentStatus {
	def := s.Definitions[name]
	if def == nil {
		return nil
	}
	ro := s.Rollouts[name]
	st := &DeploymentStatus{Name: name, Generation: def.Generation, State: def.State, Target: def.Target, Priority: def.Priority,
		Phase: "waiting for a controller", Soak: time.Duration(def.Rollout.Soak).String(), AbortAfter: def.Rollout.AbortAfter, Wave: 1}
	if ro != nil && ro.ManifestDigest == def.ManifestDigest() {
		st.Phase, st.Reason, st.Wave, st.Updated, st.Controller = ro.Phase, ro.Reason, ro.Wave+1, ro.At, ro.Controller
	}
	given := 0 // targeted devices that hold it
	for _, id := range s.DeviceIDs() {
		d := s.Devices[id]
		if Desired(s, d) != def {
			continue
		}
		st.Targeted++
		held := d.Assignment != nil && holds(d, def)
		if held {
			given++
		}
		why := ""
		switch o, _ := Outcome(d); {
		case held && (o == OutcomeConverged || o == OutcomeFailed):
			continue
		case !d.Online:
			why = "offline"
		case !held:
			why = "not given yet"
		case d.State != nil && d.State.Properties.Reported.Deployment != nil && d.State.Properties.Reported.Deployment.Digest == d.Assignment.Digest:
			why = d.State.Properties.Reported.Deployment.State // applying
		default:
			why = "given, not taken yet"
		}
		st.PendingDevices = append(st.PendingDevices, DevicePending{Device: id, Why: why})
	}
	st.Waves = make([]WaveStatus, len(def.Rollout.Waves))
	prev := 0
	for i, w := range def.Rollout.Waves {
		n := def.Rollout.WaveTarget(i, st.Targeted)
		st.Waves[i] = WaveStatus{Wave: i + 1, Size: w, Target: max(0, n-prev)}
		prev = max(prev, n)
	}
	for _, id := range s.DeviceIDs() {
		d := s.Devices[id]
		a := d.Assignment
		if a == nil {
			continue
		}
		if a.RollbackOf == name {
			st.RolledBack = append(st.RolledBack, id)
		}
		if !holds(d, def) {
			continue
		}
		w := min(max(a.Wave, 0), len(st.Waves)-1)
		ws := &st.Waves[w]
		ws.Applied++
		ws.Devices = append(ws.Devices, id)
		st.Applied++
		switch o, why := Outcome(d); o {
		case OutcomeConverged:
			ws.Converged++
			st.Converged++
		case OutcomeFailed:
			ws.Failed++
			st.Failed++
			st.Failing = append(st.Failing, DeviceError{Device: id, Wave: w + 1, Error: why})
		}
	}
	// Pending in a wave: its devices not done yet, and, from the wave in
	// progress on, the targeted devices not given it yet, filling each
	// wave's size (the last takes the rest). A wave before the one in
	// progress is not "short" of devices that came later (the targeted
	// set changes: a higher priority deleted, a device that matched
	// later, which the last wave takes).
	notGiven := max(0, st.Targeted-given)
	cur := min(max(st.Wave-1, 0), len(st.Waves)-1)
	for i := range st.Waves {
		ws := &st.Waves[i]
		ws.Pending = max(0, ws.Applied-ws.Converged-ws.Failed)
		if i >= cur && notGiven > 0 {
			n := min(notGiven, max(0, ws.Target-ws.Applied))
			if i == len(st.Waves)-1 {
				n = notGiven
			}
			ws.Pending += n
			notGiven -= n
		}
		st.Pending += ws.Pending
		slices.Sort(ws.Devices)
	}
	return st
}

// DeviceRow is a device as `ledge fleet devices` lists it.
type DeviceRow struct {
	ID         string            `json:"id"`
	Tags       map[string]string `json:"tags"`
	Online     bool              `json:"online"`
	Deployment string            `json:"deployment,omitempty"` // fleet deployment given
	Version    string            `json:"version,omitempty"`    // the device's current deployment version
	State      string            `json:"state,omitempty"`
	Reason     string            `json:"reason,omitempty"`
	Models     map[string]string `json:"models,omitempty"`
	LastSeen   time.Time         `json:"lastSeen,omitzero"`
	// Deleted is the fleet deployment the device was given last when that
	// one was deleted since (Deployment is then empty): the device keeps
	// running it until another deployment targets it.
	Deleted string `json:"deleted,omitempty"`
}

// Where compiles a condition over device documents (the language of
// targets) for [Rows].
func Where(cond string) (func(doc []byte) bool, error) {
	c, err := route.ParseTwinQuery(cond)
	if err != nil {
		return nil, err
	}
	return func(doc []byte) bool { return c.EvalDoc(doc).IsTrue() }, nil
}

// Rows lists the devices whose document matches where (nil: all).
func Rows(s *Snapshot, where func(doc []byte) bool) []DeviceRow {
	var out []DeviceRow
	for _, id := range s.DeviceIDs() {
		d := s.Devices[id]
		if where != nil && (d.Doc == nil || !where(d.Doc)) {
			continue
		}
		r := DeviceRow{ID: id, Online: d.Online, LastSeen: d.LastSeen}
		if d.State != nil {
			r.Tags = d.State.Tags
			rep := d.State.Properties.Reported
			r.Models = rep.Models
			if dep := rep.Deployment; dep != nil {
				r.Version, r.State, r.Reason = dep.Version, dep.State, dep.Reason
			}
			if rb := rep.RolledBackFrom; rb != nil && r.State != "" {
				r.Reason = "rolled back from " + rb.Version + ": " + rb.Reason
			}
		}
		if d.Refused != "" {
			r.State, r.Reason = "refused", "state document not taken: "+d.Refused
		}
		if a := d.Assignment; a != nil && s.IsDeleted(a.Deployment) {
			r.Deleted = a.Deployment
		} else if a != nil {
			r.Deployment = a.Deployment
			if o, why := Outcome(d); o == OutcomeFailed && r.Reason == "" {
				r.Reason = why
			}
		}
		out = append(out, r)
	}
	return out
}
