package appliance

import (
	"strings"
	"testing"
	"time"
)

func TestParseConfigDefaults(t *testing.T) {
	for _, doc := range []string{"", "# nothing\n", "{}\n"} {
		got, err := ParseConfig("ledge.yaml", []byte(doc))
		if err != nil {
			t.Fatalf("%q: %v", doc, err)
		}
		want := Default()
		if got.HTTP.Listen != ":8080" || got.ShutdownTimeout != 5*time.Second || got.Database.Synchronous != "full" ||
			got.DataDir != want.DataDir || got.DeviceID != want.DeviceID {
			t.Errorf("%q: got %+v, want the defaults", doc, got)
		}
	}
}

func TestParseConfigValues(t *testing.T) {
	got, err := ParseConfig("ledge.yaml", []byte(`
deviceId: gate-7
dataDir: /tmp/x
dev: true
shutdownTimeout: 3s
log: {level: debug, format: json}
http:
  listen: 127.0.0.1:9000
database:
  synchronous: normal
inference:
  library: /opt/ort/libonnxruntime.so
  providers: [cuda, cpu]
`))
	if err != nil {
		t.Fatal(err)
	}
	if got.DeviceID != "gate-7" || got.DataDir != "/tmp/x" || !got.Dev || got.ShutdownTimeout != 3*time.Second ||
		got.Log.Level != "debug" || got.Log.Format != "json" || got.HTTP.Listen != "127.0.0.1:9000" ||
		got.Database.Synchronous != "normal" || got.Inference.Library != "/opt/ort/libonnxruntime.so" ||
		len(got.Inference.Providers) != 2 {
		t.Errorf("got %+v", got)
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      []string // substrings of the error
	}{
		{"unknown top-level key", "http:\n  listen: :1\nbogus: 1\n", []string{"ledge.yaml", "line 3", `unknown key "bogus"`}},
		{"unknown nested key", "http:\n  listne: :1\n", []string{"line 2", "http.listne", `did you mean "listen"`}},
		{"wrong type", "dev: maybe\n", []string{"line 1", "dev"}},
		{"bad duration", "shutdownTimeout: soon\n", []string{"line 1"}},
		{"bad level", "log: {level: loud}\n", []string{"log.level", "loud"}},
		{"bad format", "log: {format: xml}\n", []string{"log.format"}},
		{"bad synchronous", "database: {synchronous: off}\n", []string{"database.synchronous"}},
		{"bad device id", "deviceId: a/b\n", []string{"deviceId"}},
		{"two documents", "dev: true\n---\ndev: false\n", []string{"more than one YAML document"}},
		{"syntax", "http: [\n", []string{"invalid YAML"}},
		{"negative timeout", "shutdownTimeout: -1s\n", []string{"shutdownTimeout"}},
		// A route as a manifest writes it (a string) says what ledge.yaml
		// wants there, not a Go type.
		{"route as a string", "hub:\n  routes:\n    up: FROM /messages/* INTO $upstream\n", []string{"line 3", "hub.routes.up", `want a route: {route: "FROM ... INTO ...", priority: 0}`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("ledge.yaml", []byte(tc.doc))
			if err == nil {
				t.Fatal("want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("http:\n  listen: :8080\n"))
	f.Add([]byte("log: {level: debug}\ninference:\n  providers: [cpu]\n"))
	f.Add([]byte("a: &x {b: 1}\nc: *x\n"))
	f.Add([]byte("shutdownTimeout: 1h\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig("fuzz.yaml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.yaml: ") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("accepted config fails validation: %v", err)
		}
	})
}

// TestFleetPresenceOnlyMQTT: the fleet's presence (a last will and a
// retained message on ledge/<device>/online) goes to a generic MQTT
// upstream only; IoT Hub and a parent ledge speak the device API, where
// that topic is not (a child ledge that armed it was turned away by its
// parent over and over).
func TestFleetPresenceOnlyMQTT(t *testing.T) {
	for mode, want := range map[string]bool{"mqtt": true, "azure": false, "": false} {
		c := Default()
		c.Hub.Upstream.Mode = mode
		c.setPresence()
		if got := c.Hub.Upstream.Presence != nil; got != want {
			t.Errorf("upstream mode %q: presence armed %v, want %v", mode, got, want)
		}
	}
}
