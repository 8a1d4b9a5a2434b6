package mqtt

import (
	"strings"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// TestIsValidFilterShareName: a shared subscription has a ShareName of at
// least one character [MQTT-4.8.2-1] and a topic filter after it
// [MQTT-4.7.3-1]. Added by ledge (patch 43): $share//a and $share/g/
// were valid.
func TestIsValidFilterShareName(t *testing.T) {
	require.False(t, IsValidFilter(SharePrefix+"//a", false))
	require.False(t, IsValidFilter(SharePrefix+"/g/", false))
	require.False(t, IsValidFilter(SharePrefix+"//", false))
	require.True(t, IsValidFilter(SharePrefix+"/g/a", false))
	require.True(t, IsValidFilter(SharePrefix+"/g//", false)) // the filter "/" (two empty levels)
	require.True(t, IsValidFilter(SharePrefix+"/g/#", false))
}

// FuzzIsValidFilter: IsValidFilter never panics; a filter it passes for a
// subscription has "#" only as its last level, and when shared, a
// ShareName of at least one character without wildcards and a filter
// after it; and the topic index takes and gives back every filter it
// passes.
func FuzzIsValidFilter(f *testing.F) {
	for _, s := range []string{"a/b", "#", "+/+", SharePrefix + "/g/a", SharePrefix + "//a", SharePrefix + "/g/", SharePrefix + "/g+/a", "a/#/b", "$SYS/x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, filter string) {
		IsValidFilter(filter, true)
		if !IsValidFilter(filter, false) {
			return
		}
		if i := strings.IndexByte(filter, '#'); i >= 0 && i != len(filter)-1 {
			t.Fatalf("%q valid with # not last", filter)
		}
		if IsSharedFilter(filter) {
			parts := strings.SplitN(filter, "/", 3)
			if len(parts) < 3 || parts[1] == "" || parts[2] == "" || strings.ContainsAny(parts[1], "+#") {
				t.Fatalf("shared %q valid", filter)
			}
		}
		x := NewTopicsIndex()
		x.Subscribe("cl", packets.Subscription{Filter: filter})
		if !x.Unsubscribe(filter, "cl") {
			t.Fatalf("%q subscribed but not unsubscribed", filter)
		}
	})
}
