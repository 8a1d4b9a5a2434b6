package main

import (
	"bytes"
	"encoding/json"
	"regexp"
	"testing"

	"ledge/hub"
)

// TestPrintHubRelays: `ledge hub` lists every relay to the parent with
// its state and last error (a twin the parent does not answer for shows
// while the relay is connected); `ledge status` names only the relays
// that are not well.
func TestPrintHubRelays(t *testing.T) {
	st := &hub.Stats{Hostname: "gw"}
	st.Upstream.Mode, st.Upstream.Broker, st.Upstream.State = "azure", "ssl://parent:8883", "connected"
	st.Upstream.Relays = []hub.RelayStatus{
		{Identity: "gw/$edgeAgent", State: "connected"},
		{Identity: "gw/$ledge", State: "connected", LastError: "read the twin: the parent did not answer a twin request within 10s (again in 4s)"},
		{Identity: "sensor", State: "refused", LastError: "not Authorized"},
	}
	var out bytes.Buffer
	printHub(&out, st)
	for _, want := range []string{
		`(?m)^  RELAY +STATE +LAST ERROR$`,
		`(?m)^  gw/\$edgeAgent +connected +-$`,
		`(?m)^  gw/\$ledge +connected +read the twin: the parent did not answer a twin request within 10s \(again in 4s\)$`,
		`(?m)^  sensor +refused +not Authorized$`,
	} {
		if !regexp.MustCompile(want).MatchString(out.String()) {
			t.Errorf("ledge hub: no line %s in\n%s", want, out.String())
		}
	}
	raw, _ := json.Marshal(st)
	out.Reset()
	printHubSummary(&out, raw, nil)
	if s := out.String(); regexp.MustCompile(`edgeAgent`).MatchString(s) ||
		!regexp.MustCompile(`(?m)^ +relay gw/\$ledge: connected - read the twin: `).MatchString(s) ||
		!regexp.MustCompile(`(?m)^ +relay sensor: refused - not Authorized$`).MatchString(s) {
		t.Errorf("ledge status:\n%s", s)
	}
}
