package hub

import (
	"context"
	"database/sql"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ledge/internal/testenv"
)

// mosq runs Debian's mosquitto_pub / mosquitto_sub against a hub.
type mosq struct {
	t        *testing.T
	pub, sub string
	port     int
	auth     []string
}

func newMosq(t *testing.T, port int, user, pass string) *mosq {
	m := &mosq{t: t, pub: testenv.Command(t, "mosquitto_pub", "mosquitto-clients"),
		sub: testenv.Command(t, "mosquitto_sub", "mosquitto-clients"), port: port}
	if user != "" {
		m.auth = []string{"-u", user, "-P", pass}
	}
	return m
}

func (m *mosq) args(extra ...string) []string {
	a := []string{"-h", "127.0.0.1", "-p", fmt.Sprint(m.port)}
	a = append(a, m.auth...)
	return append(a, extra...)
}

// run runs a client to completion and returns its stdout.
func (m *mosq) run(bin string, stdin string, args ...string) string {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(m.t.Context(), 60*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, bin, m.args(args...)...)
	c.Stdin = strings.NewReader(stdin)
	var stderr strings.Builder
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		m.t.Fatalf("%s %s: %v\nstdout: %.500s\nstderr: %s", filepath.Base(bin), strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// hubRun is a hub on a database that outlives it, so a test can restart it.
type hubRun struct {
	*testHub
	stop func()
}

func runHubOn(t *testing.T, db *sql.DB, dir string, mutate func(*Config), dev bool) *hubRun {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Hostname = "ledge.test"
	cfg.Listen = ListenConfig{MQTT: "127.0.0.1:0", MQTTS: "127.0.0.1:0"}
	if mutate != nil {
		mutate(&cfg)
	}
	h, err := New(t.Context(), Options{Config: cfg, DB: db, DataDir: dir, DeviceID: testDevice, Dev: dev, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("hub Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("hub did not stop within 15 s")
		}
	}
	t.Cleanup(stop)
	waitFor(t, "hub listening", func() bool { return h.Ports().MQTT != 0 })
	return &hubRun{testHub: &testHub{Hub: h, dir: dir}, stop: stop}
}

// TestPersistentSessionMosquitto: mosquitto_sub with a persistent session
// (3.1.1 clean session 0; MQTT 5 with a session expiry) subscribes and
// leaves; mosquitto_pub sends QoS 1 messages; the subscriber comes back
// and gets every message, in publish order, as mosquitto delivers them.
func TestPersistentSessionMosquitto(t *testing.T) {
	h := startHub(t, nil, false)
	h.addIdentity(t, IdentitySpec{Name: "tool", Kind: KindUser, Password: "s3cret"})
	m := newMosq(t, h.Ports().MQTT, "tool", "s3cret")
	for _, v := range []struct {
		name       string
		args, pubV []string
	}{
		{"v311", []string{"-V", "mqttv311"}, []string{"-V", "mqttv311"}},
		{"v5", []string{"-V", "mqttv5", "-x", "300"}, []string{"-V", "mqttv5"}},
	} {
		for _, n := range []int{5, 1000} {
			t.Run(fmt.Sprintf("%s-%d", v.name, n), func(t *testing.T) {
				m.t = t
				id := fmt.Sprintf("s-%s-%d", v.name, n)
				topic := "persist/" + id
				subArgs := append(append([]string{}, v.args...), "-c", "-i", id, "-q", "1", "-t", topic)
				m.run(m.sub, "", append(subArgs, "-E")...) // subscribe, leave
				publishLines(t, m, topic, n, v.pubV...)    // mosquitto_pub of the same version
				got := m.run(m.sub, "", append(subArgs, "-C", fmt.Sprint(n), "-W", "15")...)
				checkInOrder(t, got, n)
			})
		}
	}
}

// TestPersistentSessionAcrossRestart: the same, with the hub stopped and
// started again between the publishes and the subscriber's return.
func TestPersistentSessionAcrossRestart(t *testing.T) {
	db := testenv.DB(t)
	dir := t.TempDir()
	h := runHubOn(t, db, dir, nil, false)
	h.addIdentity(t, IdentitySpec{Name: "tool", Kind: KindUser, Password: "s3cret"})
	m := newMosq(t, h.Ports().MQTT, "tool", "s3cret")
	const n = 1000
	v5 := []string{"-V", "mqttv5", "-x", "3600", "-c", "-q", "1"}
	m.run(m.sub, "", append(v5, "-i", "r5", "-t", "restart/5", "-E")...)
	m.run(m.sub, "", "-V", "mqttv311", "-c", "-q", "1", "-i", "r3", "-t", "restart/3", "-E")
	publishLines(t, m, "restart/5", n)
	publishLines(t, m, "restart/3", n)
	h.stop()

	h2 := runHubOn(t, db, dir, nil, false)
	m.port = h2.Ports().MQTT
	checkInOrder(t, m.run(m.sub, "", append(v5, "-i", "r5", "-t", "restart/5", "-C", fmt.Sprint(n), "-W", "15")...), n)
	checkInOrder(t, m.run(m.sub, "", "-V", "mqttv311", "-c", "-q", "1", "-i", "r3", "-t", "restart/3", "-C", fmt.Sprint(n), "-W", "15"), n)
}

// publishLines publishes m1..mn with QoS 1 from one mosquitto_pub
// (MQTT 3.1.1 unless extra says otherwise).
func publishLines(t *testing.T, m *mosq, topic string, n int, extra ...string) {
	t.Helper()
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "m%d\n", i)
	}
	m.run(m.pub, b.String(), append(extra, "-q", "1", "-t", topic, "-l")...)
}

func checkInOrder(t *testing.T, out string, n int) {
	t.Helper()
	lines := strings.Fields(out)
	if len(lines) != n {
		t.Fatalf("got %d messages, want %d: %.200q", len(lines), n, out)
	}
	for i, l := range lines {
		if want := fmt.Sprintf("m%d", i+1); l != want {
			t.Fatalf("message %d is %q, want %q (publish order); got %.300q", i+1, l, want, out)
		}
	}
}

// TestPersistentSessionKill9: messages acknowledged to mosquitto_pub for a
// persistent session whose client is away survive kill -9 of the hub.
// Each commit is held back 200 ms, so a PUBACK sent before its message's
// commit would be followed by the kill inside that window, and the
// message lost.
func TestPersistentSessionKill9(t *testing.T) {
	t.Setenv("LEDGE_HUB_COMMIT_DELAY", "200ms")
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.Listen = ListenConfig{MQTT: "127.0.0.1:0"}
	c := startChild(t, childSpec{Dir: dir, Dev: true, Config: cfg})
	m := newMosq(t, c.port, "", "")
	const n = 20 // a commit each: the hub reads a publisher's next packet after acking its last
	sub := []string{"-V", "mqttv5", "-x", "3600", "-c", "-q", "1", "-i", "k9", "-t", "k9/t"}
	m.run(m.sub, "", append(sub, "-E")...)
	publishLines(t, m, "k9/t", n) // returns once every PUBACK came
	c.kill()

	c2 := startChild(t, childSpec{Dir: dir, Dev: true, Config: cfg})
	m.port = c2.port
	checkInOrder(t, m.run(m.sub, "", append(sub, "-C", fmt.Sprint(n), "-W", "15")...), n)
}

// TestOrphanSessionRowsRemoved: rows of a client id with no session row (a
// packet of a connection being taken over can write one after its session
// was deleted) are removed at start, and a session that is kept still gets
// its messages.
func TestOrphanSessionRowsRemoved(t *testing.T) {
	db := testenv.DB(t)
	dir := t.TempDir()
	h := runHubOn(t, db, dir, nil, false)
	h.addIdentity(t, IdentitySpec{Name: "tool", Kind: KindUser, Password: "s3cret"})
	m := newMosq(t, h.Ports().MQTT, "tool", "s3cret")
	sub := []string{"-V", "mqttv5", "-x", "3600", "-c", "-q", "1", "-i", "kept", "-t", "orphans/t"}
	m.run(m.sub, "", append(sub, "-E")...)
	publishLines(t, m, "orphans/t", 3)
	h.stop()
	for _, q := range []string{
		`INSERT INTO hub_session_subs (client_id, filter, data) VALUES ('gone', 'x/#', '{}')`,
		`INSERT INTO hub_session_msgs (client_id, packet_id, data) VALUES ('gone', 7, '{}')`,
		`INSERT INTO hub_session_rcvd (client_id, packet_id) VALUES ('gone', 9)`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}

	h2 := runHubOn(t, db, dir, nil, false)
	m.port = h2.Ports().MQTT
	// The kept session's messages come once the store is loaded.
	checkInOrder(t, m.run(m.sub, "", append(sub, "-C", "3", "-W", "15")...), 3)
	for _, table := range []string{"hub_session_subs", "hub_session_msgs", "hub_session_rcvd"} {
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM ` + table + ` WHERE client_id = 'gone'`).Scan(&n); err != nil || n != 0 {
			t.Errorf("%s: %d rows of a client with no session left after a start (%v)", table, n, err)
		}
	}
}
