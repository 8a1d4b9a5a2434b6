package main

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"ledge/internal/testenv"
)

// TestFleetDeviceOffline: `ledge fleet devices` shows an appliance
// offline however it went: killed (kill -9: the broker fires its last
// will) or stopped cleanly (SIGTERM, as systemctl stop: the DISCONNECT
// makes the broker discard the will, so the appliance says it is
// offline itself). Before, a cleanly stopped appliance stayed online on
// the broker for good, and a rollout waited for it.
func TestFleetDeviceOffline(t *testing.T) {
	testenv.Docker(t)
	b := startBroker(t)
	f := newFleet(t, 2, []string{"tcp://" + b.addr}, func(i int) string { return "site: berlin" })
	online := func() map[string]bool {
		m := map[string]bool{}
		for _, r := range f.devicesJSON() {
			m[r.ID] = r.Online
		}
		return m
	}
	waitFor(t, 30*time.Second, "2 devices online", func() bool {
		m := online()
		return m[f.ids[0]] && m[f.ids[1]]
	})
	stop := func(i int, sig syscall.Signal) {
		d := f.devices[i]
		d.cmd.Process.Signal(sig)
		select {
		case err := <-d.done:
			d.done <- err
		case <-time.After(30 * time.Second):
			t.Fatalf("%s did not exit on %v", f.ids[i], sig)
		}
	}
	stop(0, syscall.SIGKILL)
	waitFor(t, 20*time.Second, f.ids[0]+" offline after kill -9 (its last will)", func() bool { return !online()[f.ids[0]] })
	stop(1, syscall.SIGTERM)
	waitFor(t, 20*time.Second, f.ids[1]+" offline after a clean stop", func() bool { return !online()[f.ids[1]] })
	out := f.cli("devices")
	for _, id := range f.ids {
		line := ""
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, id+" ") {
				line = l
			}
		}
		if fs := strings.Fields(line); len(fs) < 3 || fs[2] != "no" {
			t.Errorf("ledge fleet devices, %s: %q, want ONLINE no\n%s", id, line, out)
		}
	}
}
