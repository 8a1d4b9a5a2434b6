package hub

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// connackOf runs mosquitto_sub with args and returns the CONNACK line it
// printed (-d), e.g. "received CONNACK (135)".
func connackOf(t *testing.T, m *mosq, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, m.sub, m.args(append(args, "-d", "-t", "x", "-E")...)...).CombinedOutput()
	for _, l := range strings.Split(string(out), "\n") {
		if i := strings.Index(l, "received CONNACK"); i >= 0 {
			return l[i:]
		}
	}
	t.Fatalf("mosquitto_sub %s: no CONNACK: %s", strings.Join(args, " "), out)
	return ""
}

// TestRefusalReasons: a CONNACK refusing a client says why, with the code
// mosquitto uses for it, not "bad user name or password" for credentials
// that are right: a client id another identity holds and a Will topic the
// ACL does not allow are "not authorized" (MQTT 5 0x87, 3.1.1 5); an
// identity over hub.maxConnectionsPerIdentity is "quota exceeded" (0x97;
// 3.1.1 3, server unavailable). A wrong password stays 0x86 (3.1.1: 5,
// as mosquitto answers it).
func TestRefusalReasons(t *testing.T) {
	h := startHub(t, func(c *Config) { c.MaxConnectionsPerIdentity = 1 }, false)
	h.addIdentity(t, IdentitySpec{Name: "alice", Kind: KindUser, Password: "pw-a"})
	h.addIdentity(t, IdentitySpec{Name: "bob", Kind: KindUser, Password: "pw-b"})
	alice := newMosq(t, h.Ports().MQTT, "alice", "pw-a")
	bob := newMosq(t, h.Ports().MQTT, "bob", "pw-b")
	alice.run(alice.sub, "", "-c", "-i", "kept", "-q", "1", "-t", "x", "-E") // holds "kept" while away

	for _, c := range []struct {
		what string
		m    *mosq
		args []string
		want string
	}{
		{"held id v5", bob, []string{"-V", "mqttv5", "-i", "kept"}, "CONNACK (135)"},
		{"held id v311", bob, []string{"-V", "mqttv311", "-i", "kept"}, "CONNACK (5)"},
		{"will topic v5", bob, []string{"-V", "mqttv5", "-i", "w", "--will-topic", "$iothub/x", "--will-payload", "x"}, "CONNACK (135)"},
		{"wrong password v5", newMosq(t, h.Ports().MQTT, "bob", "nope"), []string{"-V", "mqttv5", "-i", "pw"}, "CONNACK (134)"},
	} {
		if got := connackOf(t, c.m, c.args...); !strings.Contains(got, c.want) {
			t.Errorf("%s: %s, want %s", c.what, got, c.want)
		}
	}

	// One connection of bob's is all hub.maxConnectionsPerIdentity allows.
	if _, err := h.connect(t, "b-1", "bob", "pw-b", false, nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ v, want string }{{"mqttv5", "CONNACK (151)"}, {"mqttv311", "CONNACK (3)"}} {
		if got := connackOf(t, bob, "-V", c.v, "-i", "b-2"); !strings.Contains(got, c.want) {
			t.Errorf("over the per-identity limit, %s: %s, want %s", c.v, got, c.want)
		}
	}
}
