package agent

import (
	"testing"

	"ledge/agent/manifest"
)

// TestSettingsDiffUnsetStartupOrder: a module without startupOrder starts
// last; the plan says so rather than printing the sentinel 4294967295.
func TestSettingsDiffUnsetStartupOrder(t *testing.T) {
	set := &manifest.Module{StartupOrder: 1}
	unset := &manifest.Module{StartupOrder: manifest.DefaultStartupOrder}
	for _, c := range []struct {
		a, b *manifest.Module
		want string
	}{
		{set, unset, "startupOrder 1 -> unset (starts last)"},
		{unset, set, "startupOrder unset (starts last) -> 1"},
		{set, &manifest.Module{StartupOrder: 4}, "startupOrder 1 -> 4"},
	} {
		if got := settingsDiff(c.a, c.b); got != c.want {
			t.Errorf("settingsDiff = %q, want %q", got, c.want)
		}
	}
}
