package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
)

// fakeIdentities stands in for the hub's identity registry (appliance
// wires the hub in): it hands out fixed credentials and records removals.
type fakeIdentities struct {
	ep      HubEndpoint
	mu      sync.Mutex
	removed []string
}

func (f *fakeIdentities) ModuleIdentity(_ context.Context, module string) (ModuleIdentity, error) {
	return ModuleIdentity{DeviceID: "gate-7", ModuleID: module, GenerationID: "gen-" + module,
		Username: "gate-7/" + module, Password: "secret-" + module, SharedAccessKey: "a2V5LQ=="}, nil
}

func (f *fakeIdentities) RemoveModuleIdentity(_ context.Context, module string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed = append(f.removed, module)
	return nil
}

func (f *fakeIdentities) Endpoint() HubEndpoint { return f.ep }

// TestIdentityInjection: a module gets its hub identity as environment
// (plain MQTT and Azure SDK variables), the hub's CA mounted read-only,
// and the hub's hostname resolves, inside the container on the module
// network, to this host: the module reaches a listener here by that name.
// A removed module's identity is removed.
func TestIdentityInjection(t *testing.T) {
	hub, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	hello := make(chan string, 1)
	go func() {
		c, err := hub.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		hello <- strings.TrimSpace(line)
	}()
	port := hub.Addr().(*net.TCPAddr).Port
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\ntest\n-----END CERTIFICATE-----\n"), 0o644)
	ids := &fakeIdentities{ep: HubEndpoint{Hostname: "ledge-hub.test", IoTHubHostname: "gate-7.ledge", MQTTPort: 1883, MQTTTLSPort: 8883, CAFile: ca}}
	twins := &recordingTwins{}
	ta := newTestAgent(t, func(o *Options) { o.Identities, o.Twins = ids, twins })

	ta.apply(manifestYAML("1", "probe "+imgApp+" always 0 probe ledge-hub.test "+strconv.Itoa(port), "other "+imgApp+" always 0") +
		"twins:\n  probe: {threshold: 0.5}\n")
	ta.waitState("1", StateConverged, 30*time.Second)
	select {
	case got := <-hello:
		if got != "hello from probe" {
			t.Errorf("the hub listener got %q", got)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("the module did not reach the hub by its hostname; its output:\n%s", logs(t, ta.containers()["probe"].ID))
	}
	out := logs(t, ta.containers()["probe"].ID)
	for _, want := range []string{
		"env LEDGE_MQTT_URL=mqtts://ledge-hub.test:8883",
		"env LEDGE_MQTT_USERNAME=gate-7/probe",
		"env LEDGE_MODULE_ID=probe",
		"env LEDGE_DEVICE_ID=gate-7",
		"env IOTEDGE_MODULEID=probe",
		"env IOTEDGE_GATEWAYHOSTNAME=ledge-hub.test",
		"env EdgeHubConnectionString=HostName=gate-7.ledge;GatewayHostName=ledge-hub.test;DeviceId=gate-7;ModuleId=probe;SharedAccessKey=a2V5LQ==",
		"env EdgeModuleCACertificateFile=" + caPathInContainer,
		`ca "-----BEGIN CERTIFICATE-----\ntest\n-----END CERTIFICATE-----\n" <nil>`,
		"dial <nil>",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("module output lacks %q:\n%s", want, out)
		}
	}
	c := ta.containers()["probe"]
	if !slices.Contains(c.Host.Binds, ca+":"+caPathInContainer+":ro") {
		t.Errorf("CA bind %v", c.Host.Binds)
	}
	if len(c.Host.ExtraHosts) != 1 || !strings.HasPrefix(c.Host.ExtraHosts[0], "ledge-hub.test:") {
		t.Errorf("extra hosts %v", c.Host.ExtraHosts)
	}
	if string(twins.get("probe")) != `{"threshold":0.5}` {
		t.Errorf("twin of probe: %s", twins.get("probe"))
	}
	for _, kv := range c.Env {
		if strings.HasPrefix(kv, "LEDGE_MQTT_PASSWORD=") && kv != "LEDGE_MQTT_PASSWORD=secret-probe" {
			t.Errorf("password env %q", kv)
		}
	}

	ta.apply(manifestYAML("2", "probe "+imgApp+" always 0 probe ledge-hub.test "+strconv.Itoa(port)))
	ta.waitState("2", StateConverged, 30*time.Second)
	waitFor(t, 5*time.Second, func() (bool, string) {
		ids.mu.Lock()
		defer ids.mu.Unlock()
		return len(ids.removed) == 1 && ids.removed[0] == "other", strings.Join(ids.removed, ",")
	})
}

// recordingTwins stands in for the hub's twins.
type recordingTwins struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (r *recordingTwins) SetDesired(_ context.Context, module string, desired json.RawMessage) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string][]byte{}
	}
	r.m[module] = desired
	return nil
}

func (r *recordingTwins) get(module string) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[module]
}

// logs returns a container's output (stdout and stderr, demultiplexed
// roughly: test output is plain text).
func logs(t testing.TB, id string) string {
	t.Helper()
	rc, err := docker(t).ContainerLogs(context.Background(), id, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		return err.Error()
	}
	defer rc.Close()
	var b strings.Builder
	hdr := make([]byte, 8)
	for {
		if _, err := io.ReadFull(rc, hdr); err != nil {
			break
		}
		n := int(hdr[4])<<24 | int(hdr[5])<<16 | int(hdr[6])<<8 | int(hdr[7])
		if _, err := io.CopyN(&b, rc, int64(n)); err != nil {
			break
		}
	}
	return b.String()
}
