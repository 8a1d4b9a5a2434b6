package main

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
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

// TestPrintStatusDiskLow: a nearly full data disk gets its own line in
// ledge status, with the reason the daemon gives.
func TestPrintStatusDiskLow(t *testing.T) {
	why := "only 12.0 MiB free on the data dir's file system (/var/lib/ledge): free space there"
	sys, _ := json.Marshal(map[string]any{"version": "v", "diskFree": 12 << 20, "diskTotal": 1 << 30, "diskLow": why})
	var out bytes.Buffer
	printStatus(&out, &statusReport{System: sys})
	if !strings.Contains(out.String(), "disk LOW: "+why+"\n") {
		t.Errorf("ledge status with a low disk:\n%s", out.String())
	}
	sys, _ = json.Marshal(map[string]any{"version": "v", "diskFree": 12 << 30, "diskTotal": 20 << 30})
	out.Reset()
	printStatus(&out, &statusReport{System: sys})
	if strings.Contains(out.String(), "LOW") {
		t.Errorf("ledge status with room on the disk:\n%s", out.String())
	}
}
