package agent

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"ledge/agent/workload"
	"ledge/internal/fault"
)

// fakeKeys stands in for the hub's keys: each module's key is
// "key-<module>", its generation id "gen-<module>" (as fakeIdentities).
type fakeKeys struct{}

func fakeDigest(module string, data []byte) []byte {
	m := hmac.New(sha256.New, []byte("key-"+module))
	m.Write(data)
	return m.Sum(nil)
}

func (fakeKeys) Sign(_ context.Context, module, genID string, data []byte) ([]byte, error) {
	if genID != "gen-"+module {
		return nil, fault.New(fault.Forbidden, "generation id %q is not %s's", genID, module)
	}
	return fakeDigest(module, data), nil
}

func (fakeKeys) TrustBundle() ([]byte, error) {
	return []byte("-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n"), nil
}

func (fakeKeys) ServerCertificate(_ context.Context, module, cn string, notAfter time.Time) ([]byte, []byte, time.Time, error) {
	return []byte("CERT " + cn), []byte("KEY " + cn), notAfter, nil
}

// TestWorkloadAPIInContainer: a module runs with its own workload API
// socket mounted and no key in its environment; from inside its
// container, as a user other than root, it gets the trust bundle, signs
// for itself, and is refused when it signs for another module, with a
// stale generation id, without an api-version, or asks for a server
// certificate in the hub's name. Its socket goes when it leaves the
// deployment.
func TestWorkloadAPIInContainer(t *testing.T) {
	dataDir := t.TempDir()
	ids := &fakeIdentities{ep: HubEndpoint{Hostname: "ledge-hub.test", IoTHubHostname: "gate-7.ledge", MQTTTLSPort: 8883}}
	ta := newTestAgent(t, func(o *Options) {
		o.Identities, o.Workload, o.DataDir = ids, fakeKeys{}, dataDir
	})
	doc := "version: '1'\nmodules:\n  wl:\n    image: " + imgApp + "\n    imagePullPolicy: never\n    createOptions: {User: '1000:1000', Cmd: [workload]}\n" +
		"  other:\n    image: " + imgApp + "\n    imagePullPolicy: never\n"
	ta.apply(doc)
	ta.waitState("1", StateConverged, 60*time.Second)
	var out string
	waitFor(t, 20*time.Second, func() (bool, string) {
		out = logs(t, ta.containers()["wl"].ID)
		return strings.Contains(out, "workload done"), out
	})
	digest := base64.StdEncoding.EncodeToString(fakeDigest("wl", []byte("hello")))
	for _, want := range []string{
		`uid 1000 key-in-env false connection-string ""`,
		`trust 200 {"certificate":"-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n"}`,
		`sign-self 200 {"digest":"` + digest + `"}`,
		`sign-other 403 {"message":"this socket serves module \"wl\": it may only sign for itself, not for \"other\""}`,
		`sign-genid 403`, `no-version 400`,
		`cert-self 200 {"certificate":"CERT wl","expiration":`,
		`cert-hub 403`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("module output lacks %q:\n%s", want, out)
		}
	}
	c := ta.containers()["wl"]
	if !slices.Contains(c.Host.Binds, filepath.Join(dataDir, "workload", "wl")+":"+workload.ContainerDir+":ro") {
		t.Errorf("binds %v", c.Host.Binds)
	}
	for _, kv := range c.Env {
		if strings.Contains(kv, "SharedAccessKey") || strings.HasPrefix(kv, "EdgeHubConnectionString=") {
			t.Errorf("a key in the container's environment: %s", kv)
		}
	}
	if !slices.Contains(c.Env, "IOTEDGE_WORKLOADURI=unix:///var/run/iotedge/workload.sock") || !slices.Contains(c.Env, "IOTEDGE_MODULEGENERATIONID=gen-wl") {
		t.Errorf("env %v", c.Env)
	}

	// Restarted, ledge serves the socket again where the running
	// container sees it: the module signs without being recreated.
	id := c.ID
	ta.stop()
	ta.start(func(o *Options) { o.Identities, o.Workload, o.DataDir = ids, fakeKeys{}, dataDir })
	ta.waitState("1", StateConverged, 60*time.Second)
	if got := ta.containers()["wl"].ID; got != id {
		t.Fatalf("wl was recreated by a restart (%s, was %s)", got, id)
	}
	if err := ta.RestartModule(t.Context(), "wl"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, func() (bool, string) {
		out = logs(t, id)
		return strings.Count(out, "sign-self 200") == 2, out
	})

	ta.apply("version: '2'\nmodules:\n  other:\n    image: " + imgApp + "\n    imagePullPolicy: never\n")
	ta.waitState("2", StateConverged, 60*time.Second)
	waitFor(t, 10*time.Second, func() (bool, string) {
		_, err := filepath.Glob(filepath.Join(dataDir, "workload", "wl", "*"))
		m, _ := filepath.Glob(filepath.Join(dataDir, "workload", "wl"))
		return err == nil && len(m) == 0, strings.Join(m, ",")
	})
}
