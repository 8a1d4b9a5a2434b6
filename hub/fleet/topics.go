package fleet

import "strings"

// Topics is the fleet's topic layout under a prefix (default "ledge"):
//
//	<p>/<device>/state             retained DeviceState, by the device
//	<p>/<device>/online            retained Presence; the device's last will sets it offline
//	<p>/<device>/deployment        retained signed manifest for the device (the agent's MQTT source)
//	<p>/fleet/deployments/<name>   retained signed Definition, by `ledge fleet deploy` (a Tombstone after `ledge fleet delete`)
//	<p>/fleet/rollouts/<name>      retained Rollout progress, by the controller (deleted, by `ledge fleet delete` too)
//	<p>/fleet/assignments/<device> retained Assignment: what the controller gave the device
//	<p>/fleet/lease                retained Lease of the active controller
//	<p>/fleet/controllers/<id>     retained controller presence (last will: offline)
type Topics struct{ Prefix string }

// DefaultTopics uses the prefix "ledge", the agent's default deployment
// topic ledge/{device}/deployment.
var DefaultTopics = Topics{Prefix: "ledge"}

func (t Topics) p() string {
	if t.Prefix == "" {
		return "ledge"
	}
	return t.Prefix
}

func (t Topics) State(device string) string      { return t.p() + "/" + device + "/state" }
func (t Topics) Online(device string) string     { return t.p() + "/" + device + "/online" }
func (t Topics) Deployment(device string) string { return t.p() + "/" + device + "/deployment" }
func (t Topics) Definition(name string) string   { return t.p() + "/fleet/deployments/" + name }
func (t Topics) Rollout(name string) string      { return t.p() + "/fleet/rollouts/" + name }
func (t Topics) Assignment(device string) string { return t.p() + "/fleet/assignments/" + device }
func (t Topics) Lease() string                   { return t.p() + "/fleet/lease" }
func (t Topics) Controller(id string) string     { return t.p() + "/fleet/controllers/" + id }

// Filters are the subscriptions that fill a View with the whole fleet.
func (t Topics) Filters() []string {
	return []string{t.p() + "/+/state", t.p() + "/+/online", t.p() + "/fleet/#"}
}

// kind classifies a topic of the layout: what it is and its name.
func (t Topics) kind(topic string) (kind, name string) {
	rest, ok := strings.CutPrefix(topic, t.p()+"/")
	if !ok {
		return "", ""
	}
	parts := strings.Split(rest, "/")
	switch {
	case len(parts) == 3 && parts[0] == "fleet" && parts[1] == "deployments":
		return "definition", parts[2]
	case len(parts) == 3 && parts[0] == "fleet" && parts[1] == "rollouts":
		return "rollout", parts[2]
	case len(parts) == 3 && parts[0] == "fleet" && parts[1] == "assignments":
		return "assignment", parts[2]
	case len(parts) == 3 && parts[0] == "fleet" && parts[1] == "controllers":
		return "controller", parts[2]
	case len(parts) == 2 && parts[0] == "fleet" && parts[1] == "lease":
		return "lease", ""
	case len(parts) == 2 && parts[0] != "fleet" && parts[1] == "state":
		return "state", parts[0]
	case len(parts) == 2 && parts[0] != "fleet" && parts[1] == "online":
		return "online", parts[0]
	}
	return "", ""
}

// ValidName reports whether s can name a device or a deployment in a
// topic level: 1-128 characters, no '/', '+', '#', '$', space or control
// character, and not "fleet".
func ValidName(s string) bool {
	if s == "" || len(s) > 128 || s == "fleet" {
		return false
	}
	for _, r := range s {
		if r < 0x21 || r == 0x7f || strings.ContainsRune("/+#$", r) {
			return false
		}
	}
	return true
}
