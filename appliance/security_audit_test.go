package appliance

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"ledge/agent"
	"ledge/hub"
	"ledge/internal/fault"
	"ledge/internal/testenv"
	"ledge/models"
)

// Security tests of the second audit (after issue 12): each runs one
// attack against a whole appliance (real Docker, real mosquitto), and
// failed before its fix. docs/security.md lists the findings.

// loopDevice attaches a file holding secret as a loop block device (a
// disk of the host, as far as a container can tell) and returns its path.
func loopDevice(t *testing.T, secret string) string {
	t.Helper()
	losetup := testenv.Command(t, "losetup", "mount")
	img := filepath.Join(t.TempDir(), "disk.img")
	data := make([]byte, 64<<10)
	copy(data, secret)
	if err := os.WriteFile(img, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(losetup, "-f", "--show", img).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup (the test needs root and loop devices): %v %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command(losetup, "-d", dev).Run() })
	return dev
}

// TestDeviceMappingsGuarded (audit finding 1, high): an unsigned manifest
// from upstream maps a block device (the host's disk) into a module,
// which read it: Devices passed the privilege policy whatever they were.
// Now a block device, a folder holding one (/dev), and memory, MSR, raw
// SCSI, MTD and NVMe controller devices are elevated settings: refused
// by apply, by remote sources and by deploy check (also --offline, by
// name), naming the module, the setting and the key. A camera-like
// character device still passes.
func TestDeviceMappingsGuarded(t *testing.T) {
	image := "ledge-test/attacker:" + runID()
	buildAttackerImage(t, image)
	secret := "DISK-SECRET-" + runID()
	dev := loopDevice(t, secret)
	u := runUpstreamAppliance(t, "", nil)
	app, cfg := u.app, u.cfg

	attack := fmt.Sprintf(`version: "1"
modules:
  disk:
    image: %s
    imagePullPolicy: never
    createOptions:
      Cmd: [read-dev, /dev/xd]
      HostConfig: {Devices: [{PathOnHost: %s, PathInContainer: /dev/xd, CgroupPermissions: r}]}
`, image, dev)
	publishUpstream(t, u.broker, "ledge/"+cfg.DeviceID+"/deployment", []byte(attack))
	name := cfg.Agent.ContainerPrefix + "disk"
	waitUntil(t, 60*time.Second, "the disk mapping refused or run", func() bool {
		return app.agent.Reported().Rejected != nil || strings.Contains(dockerLogs(name), "READ-DEV")
	})
	if logs := dockerLogs(name); strings.Contains(logs, secret) {
		t.Fatalf("a module from an unsigned upstream manifest read the host's block device %s:\n%s", dev, logs)
	}
	rej := app.agent.Reported().Rejected
	if rej == nil {
		t.Fatalf("no rejection; the module printed:\n%s", dockerLogs(name))
	}
	for _, want := range []string{`module "disk"`, "HostConfig.Devices[0]", dev, "block device", "agent.allowElevatedPermissions"} {
		if !strings.Contains(rej.Reason, want) {
			t.Errorf("rejection %q lacks %q", rej.Reason, want)
		}
	}

	// The folder that holds it, through the API's check and apply.
	whole := fmt.Sprintf(`version: "2"
modules:
  all:
    image: %s
    imagePullPolicy: never
    createOptions: {HostConfig: {Devices: [{PathOnHost: /dev/../dev, PathInContainer: /dev/host, CgroupPermissions: rwm}]}}
`, image)
	for _, f := range []func([]byte) error{
		func(m []byte) error { _, err := app.agent.Check(t.Context(), m, nil); return err },
		func(m []byte) error { _, err := app.agent.Apply(t.Context(), m, nil); return err },
	} {
		err := f([]byte(whole))
		if !fault.Is(err, fault.Forbidden) || !strings.Contains(err.Error(), "HostConfig.Devices[0]") {
			t.Errorf("mapping all of /dev: %v, want refused naming HostConfig.Devices[0]", err)
		}
	}
	// deploy check --offline, away from the appliance: by name.
	for _, p := range []string{"/dev/sda", "/dev/mmcblk0p2", "/dev/nvme0n1", "/dev/mem", "/dev/disk/by-label/root", "/dev"} {
		m := fmt.Sprintf("version: \"3\"\nmodules:\n  m:\n    image: x\n    createOptions: {HostConfig: {Devices: [{PathOnHost: %q, PathInContainer: /dev/x}]}}\n", p)
		if _, err := agent.PlanOffline([]byte(m), nil, agent.Config{}, "", ""); !fault.Is(err, fault.Forbidden) {
			t.Errorf("deploy check --offline of a mapping of %s: %v, want refused", p, err)
		}
	}
	if ids := containerIDs(t, cfg.Agent.ContainerPrefix); ids != "" {
		t.Fatalf("refused manifests made containers: %s", ids)
	}
	// A character device (what a camera is) still passes.
	cam := fmt.Sprintf("version: \"4\"\nmodules:\n  cam:\n    image: %s\n    imagePullPolicy: never\n    createOptions: {HostConfig: {Devices: [{PathOnHost: /dev/null, PathInContainer: /dev/video0}]}}\n", image)
	if _, err := app.agent.Check(t.Context(), []byte(cam), nil); err != nil {
		t.Errorf("a character device: %v", err)
	}
}

// TestBindLinkSwapRefused (audit finding 2, high): a module binds its own
// folder and a folder inside it (both allowed); the module replaces the
// inner folder with a link to a host folder and exits; when the agent
// started the same container again, Docker followed the link and the
// module read the host folder. Now every start checks the module's binds
// and devices on the host again: the link is refused, the container is
// removed, and the module fails saying why.
func TestBindLinkSwapRefused(t *testing.T) {
	image := "ledge-test/attacker:" + runID()
	buildAttackerImage(t, image)
	hostDir := t.TempDir()
	secret := "HOST-SECRET-" + runID()
	os.WriteFile(filepath.Join(hostDir, "secret.txt"), []byte(secret), 0o600)
	u := runUpstreamAppliance(t, "", func(c *Config) {
		c.Agent.Restart.Unit = 200 * time.Millisecond
	})
	app, cfg := u.app, u.cfg
	own := filepath.Join(cfg.DataDir, "modules", "swap")
	m := fmt.Sprintf(`version: "1"
modules:
  swap:
    image: %s
    imagePullPolicy: never
    restartPolicy: always
    createOptions:
      Cmd: [swap, /data/later, %s]
      HostConfig: {Binds: ["%s:/data", "%s/later:/host"]}
`, image, hostDir, own, own)
	if _, err := app.agent.Apply(t.Context(), []byte(m), nil); err != nil {
		t.Fatalf("a module binding its own folder twice: %v", err)
	}
	name := cfg.Agent.ContainerPrefix + "swap"
	waitUntil(t, 60*time.Second, "the link swapped, then the module read the host or failed", func() bool {
		logs := dockerLogs(name)
		st := app.agent.Reported().Modules["swap"]
		return strings.Contains(logs, "READ-HOST") || (st.RuntimeStatus == "failed" && strings.Contains(st.StatusDescription, "link"))
	})
	if logs := dockerLogs(name); strings.Contains(logs, secret) {
		t.Fatalf("the module read the host folder %s through a link it made in its own folder:\n%s", hostDir, logs)
	}
	st := app.agent.Reported().Modules["swap"]
	for _, want := range []string{"HostConfig.Binds[1]", "is a link to " + hostDir, "agent.allowedBindSources"} {
		if !strings.Contains(st.StatusDescription, want) {
			t.Errorf("module status %q lacks %q", st.StatusDescription, want)
		}
	}
	if ids := containerIDs(t, name); ids != "" {
		t.Errorf("the container with the swapped link still runs: %s", ids)
	}
	if n := strings.Count(u.logs.String(), "is a link to "+hostDir); n == 0 {
		t.Errorf("the refusal is not in the log:\n%s", u.logs.String())
	}
}

// TestModuleOutputStaysInItsTopic (audit finding 3, high): with an
// upstream topic template that places a module's output name as a level
// (ledge/{deviceId}/{output}), a module publishes telemetry on its output
// "deployment" and the manifest it carries came back from the broker as
// this appliance's own deployment, unsigned, and was applied; an output
// name with '#' made every upstream publish fail and held the queue. Now
// values put into the template cannot add levels or wildcards (/ + #
// are percent-encoded), and a routed message never goes to a topic the
// appliance takes deployments from or publishes its own state on.
func TestModuleOutputStaysInItsTopic(t *testing.T) {
	pub := testenv.Command(t, "mosquitto_pub", "mosquitto-clients")
	u := runUpstreamAppliance(t, "", func(c *Config) {
		c.Hub.Upstream.TopicTemplate = "ledge/{deviceId}/{output}"
		c.Hub.Routes = map[string]hub.RouteConfig{"up": {Route: "FROM /messages/modules/* INTO $upstream"}}
	})
	app, cfg := u.app, u.cfg
	waitUntil(t, 30*time.Second, "the upstream connected", func() bool { return app.Hub().Stats().Upstream.State == "connected" })
	creds, err := app.Hub().EnsureModule(t.Context(), "evil")
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(u.broker)
	seen := &syncBuffer{}
	wctx, stopWatch := context.WithCancel(t.Context())
	watch := testenv.MosquittoSub(t, wctx, "-h", host, "-p", port, "-v", "-t", "ledge/"+cfg.DeviceID+"/#") // subscribed
	go func() {
		for {
			l, ok := watch.Next(time.Hour)
			if !ok {
				return
			}
			fmt.Fprintln(seen, l)
		}
	}()
	t.Cleanup(func() { stopWatch(); watch.Wait() })
	send := func(output, body string) {
		t.Helper()
		topic := "devices/" + cfg.DeviceID + "/modules/evil/messages/events/%24.on=" + url.QueryEscape(output)
		out, err := exec.Command(pub, "-h", "127.0.0.1", "-p", fmt.Sprint(app.Hub().Ports().MQTT), "-i", creds.Username,
			"-u", creds.Username, "-P", creds.Password, "-q", "1", "-t", topic, "-m", body).CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_pub as module evil: %v %s", err, out)
		}
	}

	send("deployment", "version: \"666\"\nmodules: {}\n")
	send("probe", "one")
	waitUntil(t, 30*time.Second, "the probe after it at the broker", func() bool {
		return strings.Contains(seen.String(), "ledge/"+cfg.DeviceID+"/probe one")
	})
	if strings.Contains(seen.String(), "ledge/"+cfg.DeviceID+"/deployment version") {
		t.Errorf("a module's output reached the appliance's deployment topic:\n%s", seen.String())
	}
	// A deployment published at the broker now, after the module's
	// output: the broker hands the agent what it got in order, so once
	// the agent has applied this one it has had the module's, had that
	// reached the topic (its version is newer: it is applied either way).
	deployTopic := "ledge/" + cfg.DeviceID + "/deployment"
	if out, err := exec.Command(pub, "-h", host, "-p", port, "-q", "1", "-t", deployTopic, "-m", "version: \"1000\"\nmodules: {}\n").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub of a deployment: %v %s", err, out)
	}
	waitUntil(t, 30*time.Second, "the deployment from the broker applied", func() bool {
		d := app.agent.Reported().Deployment
		return d != nil && d.Version == "1000"
	})
	history, err := app.agent.History(t.Context(), 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range history {
		if d.Version == "666" {
			t.Errorf("a module's output became this appliance's deployment (source %s, %s)", d.Source, d.State)
		}
	}

	send("a#b", "poison")
	send("after", "hello")
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(seen.String(), "ledge/"+cfg.DeviceID+"/after hello") {
		if time.Now().After(deadline) {
			t.Fatalf("an output named a#b held the upstream queue: the message after it did not arrive in 20 s; upstream %+v; the broker saw:\n%s",
				app.Hub().Stats().Upstream, seen.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(seen.String(), "ledge/"+cfg.DeviceID+"/a%23b poison") {
		t.Errorf("the output named a#b did not arrive, percent-encoded, as one level:\n%s", seen.String())
	}
	if !strings.Contains(u.logs.String(), "ledge/"+cfg.DeviceID+"/deployment") {
		t.Errorf("the log does not say a routed message for the deployment topic was dropped:\n%s", u.logs.String())
	}
}

// TestWorkloadCertNotForHubNames (audit finding 4, medium): the workload
// API issues a module a server certificate for its own name, signed by
// the hub's CA; a module named localhost, or named as the appliance
// (its device id, its host name), got one that every client trusting
// the hub's CA (devices, modules, a browser on the dashboard) takes for
// the hub itself. Now a name the hub's own certificate carries is
// refused (403, saying why); other module names still get theirs.
func TestWorkloadCertNotForHubNames(t *testing.T) {
	image := "ledge-test/attacker:" + runID()
	buildAttackerImage(t, image)
	u := runUpstreamAppliance(t, "", nil)
	app, cfg := u.app, u.cfg
	names := []string{"localhost", cfg.DeviceID, "cam"}
	m := "version: \"1\"\nmodules:\n"
	for _, n := range names {
		m += fmt.Sprintf("  %s: {image: %s, imagePullPolicy: never, status: stopped}\n", n, image)
	}
	if _, err := app.agent.Apply(t.Context(), []byte(m), nil); err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(app.Hub().CAPath())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	for _, n := range names {
		waitUntil(t, 60*time.Second, n+"'s container", func() bool { return app.agent.Reported().Modules[n].ContainerID != "" })
		creds, err := app.Hub().EnsureModule(t.Context(), n)
		if err != nil {
			t.Fatal(err)
		}
		sock := filepath.Join(cfg.DataDir, "workload", n, "workload.sock")
		wc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
		body := fmt.Sprintf(`{"commonName": %q, "expiration": %q}`, n, time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
		resp, err := wc.Post("http://w/modules/"+n+"/genid/"+creds.GenerationID+"/certificate/server?api-version=2019-01-30", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if n == "cam" {
			if resp.StatusCode != http.StatusOK {
				t.Errorf("module cam's own certificate: %d %s", resp.StatusCode, data)
			}
			continue
		}
		if resp.StatusCode == http.StatusOK {
			var out struct{ Certificate string }
			json.Unmarshal(data, &out)
			b, _ := pem.Decode([]byte(out.Certificate))
			leaf, err := x509.ParseCertificate(b.Bytes)
			if err == nil {
				_, err = leaf.Verify(x509.VerifyOptions{DNSName: n, Roots: pool})
			}
			t.Errorf("module %q got a server certificate from the hub's CA for %q (verifies as the hub: %v)", n, n, err == nil)
			continue
		}
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(data), "the hub's own") {
			t.Errorf("module %q asking for a certificate for %q: %d %s, want 403 saying it is a name of the hub's own", n, n, resp.StatusCode, data)
		}
	}
}

// evalAsync runs an async JavaScript expression in the page and returns
// its string result.
func evalAsync(t *testing.T, ctx context.Context, js string) string {
	t.Helper()
	out, err := chromedp.Run(ctx, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate: %v", err)
	}
	return out
}

// TestDevModeOnlyForLoopbackPages (audit finding 5, medium, --dev only):
// dev mode lets loopback clients in without credentials, and a web page
// the developer opens elsewhere got in too. Through DNS rebinding (a
// name of the attacker's that resolves to 127.0.0.1: Chromium maps it
// here), its script called the API same-origin and made itself a device
// identity, keys included; and a page of another origin opened the MQTT
// WebSocket on the web port and connected anonymously (a WebSocket has
// no same-origin rule). Now dev mode's anonymous access is for requests
// whose Host is a loopback name, and an anonymous MQTT WebSocket only for
// clients that are not a page of another origin.
func TestDevModeOnlyForLoopbackPages(t *testing.T) {
	cfg := testConfig(t)
	cfg.Dev = true
	cfg.Agent.Enabled = false
	app, _ := startApp(t, cfg)
	_, port, _ := net.SplitHostPort(app.webAddr())
	ctx := testenv.Browser(t, chromedp.Flag("host-resolver-rules", "MAP rebind.example 127.0.0.1"))

	// The rebound name: same-origin for the browser, 127.0.0.1 for ledge.
	navigate(t, ctx, "http://rebind.example:"+port+"/login")
	got := evalAsync(t, ctx, `(async () => {
		const r = await fetch("/api/v1/hub/identities", {method: "POST", headers: {"Content-Type": "application/json"},
			body: JSON.stringify({name: "rebound", kind: "device"})});
		return r.status + " " + (await r.text()).slice(0, 300);
	})()`)
	if !strings.HasPrefix(got, "401 ") {
		t.Errorf("a page on a rebound name made an identity through the dev mode API: %s", got)
	}
	if _, err := app.Hub().ShowIdentity("rebound"); err == nil {
		t.Errorf("identity rebound exists")
	}
	// The appliance's own page on loopback still works without a password.
	navigate(t, ctx, "http://127.0.0.1:"+port+"/login")
	if got := evalAsync(t, ctx, `fetch("/api/v1/system").then(r => String(r.status))`); got != "200" {
		t.Errorf("dev mode on http://127.0.0.1: /api/v1/system %s, want 200", got)
	}

	// A page of another origin opens the hub's WebSocket and sends an
	// MQTT CONNECT without credentials.
	other := serveOn(t, "127.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Write([]byte("<!doctype html><title>elsewhere</title>"))
	}))
	connect := func() string {
		return evalAsync(t, ctx, `new Promise((resolve) => {
			const ws = new WebSocket("ws://127.0.0.1:`+port+`/$iothub/websocket", "mqtt");
			ws.binaryType = "arraybuffer";
			ws.onopen = () => ws.send(new Uint8Array([0x10, 13, 0, 4, 77, 81, 84, 84, 4, 2, 0, 60, 0, 1, 120]));
			ws.onmessage = (e) => resolve("connack " + Array.from(new Uint8Array(e.data)).join(","));
			ws.onclose = (e) => resolve("closed " + e.code);
			setTimeout(() => resolve("timeout"), 5000);
		})`)
	}
	navigate(t, ctx, other+"/")
	if got := connect(); got == "connack 32,2,0,0" {
		t.Errorf("a page of another origin connected anonymously to the dev hub over WebSocket: %s", got)
	}
	navigate(t, ctx, "http://127.0.0.1:"+port+"/login")
	if got := connect(); got != "connack 32,2,0,0" {
		t.Errorf("the appliance's own page in dev mode: %s, want an anonymous CONNACK", got)
	}
}

// hostileRegistry is an OCI registry that serves one model manifest and
// answers its blob with a redirect to where (what registries backed by
// object storage do, to anywhere a hostile one likes), over TLS for
// addr with a CA made here (written to caFile).
func hostileRegistry(t *testing.T, addr string, blob []byte, where func() string) (host, caFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hostile registry CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf, _ := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP(addr)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
		ca, &key.PublicKey, caKey)
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644)

	sum := sha256.Sum256(blob)
	layer := "sha256:" + hex.EncodeToString(sum[:])
	manifest, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"artifactType": models.ArtifactType,
		"config":       map[string]any{"mediaType": "application/vnd.oci.empty.v1+json", "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "size": 2},
		"layers":       []map[string]any{{"mediaType": models.MediaTypeONNX, "digest": layer, "size": len(blob)}}})
	msum := sha256.Sum256(manifest)
	mux := http.NewServeMux()
	mux.HandleFunc("/v2/", func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.Contains(r.URL.Path, "/manifests/"):
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.Header().Set("Docker-Content-Digest", "sha256:"+hex.EncodeToString(msum[:]))
			w.Header().Set("Content-Length", fmt.Sprint(len(manifest)))
			if r.Method != http.MethodHead {
				w.Write(manifest)
			}
		case strings.Contains(r.URL.Path, "/blobs/"):
			http.Redirect(w, r, where(), http.StatusTemporaryRedirect)
		default:
			w.WriteHeader(http.StatusOK)
		}
	})
	l, err := net.Listen("tcp", addr+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, TLSConfig: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leaf}, PrivateKey: key}}}}
	go srv.ServeTLS(l, "", "")
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String(), caFile
}

// TestOCIRedirectsBounded (audit finding 7, low): model downloads from
// oci:// registries followed any redirect the registry answered a blob
// with: to loopback or link-local (cloud metadata) addresses and to
// plain http, which https:// sources refuse since issue 12 (a registry
// outside could make the appliance send requests to its own services).
// Now oci:// downloads keep the rules of https:// ones.
func TestOCIRedirectsBounded(t *testing.T) {
	outside := outsideAddr(t)
	var inner atomic.Int32
	cfg := testConfig(t)
	cfg.Hub.Enabled = false
	cfg.Agent.Enabled = false
	cfg.Models.Download.Retries = 0
	type attempt struct {
		reg, to, want string
		sum           [32]byte
	}
	var cases []attempt
	var cas []byte
	for i, to := range []string{"loopback", "link-local", "plain http"} {
		blob := []byte(fmt.Sprintf("model bytes %d served where the registry redirects", i))
		serve := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(blob) })
		var target string
		switch to {
		case "loopback": // over https, with a certificate the store trusts
			lo := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { inner.Add(1); w.Write(blob) }))
			t.Cleanup(lo.Close)
			cas = append(cas, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: lo.Certificate().Raw})...)
			target = lo.URL + "/blob"
		case "link-local":
			target = "https://169.254.169.254/latest/meta-data/"
		case "plain http":
			target = serveOn(t, outside, serve) + "/blob"
		}
		reg, caFile := hostileRegistry(t, outside, blob, func() string { return target })
		ca, _ := os.ReadFile(caFile)
		cas = append(cas, ca...)
		cases = append(cases, attempt{reg: reg, to: target, want: to, sum: sha256.Sum256(blob)})
	}
	cfg.Models.CAFile = filepath.Join(t.TempDir(), "cas.pem")
	os.WriteFile(cfg.Models.CAFile, cas, 0o644)
	app, _ := startApp(t, cfg)
	store := app.Models()
	for i, tc := range cases {
		name := fmt.Sprint("oci", i)
		if _, err := store.Pull(t.Context(), models.Spec{Name: name, Version: "1", URL: "oci://" + tc.reg + "/ledge/evil:1", SHA256: hex.EncodeToString(tc.sum[:])}, false); err != nil {
			t.Fatal(err)
		}
		var v models.Version
		waitUntil(t, 30*time.Second, name+" settled", func() bool {
			m, _ := store.Get(t.Context(), name)
			if len(m.Versions) > 0 {
				v = m.Versions[0]
			}
			return v.State == models.StateFailed || v.State == models.StateReady
		})
		if v.State != models.StateFailed || !strings.Contains(v.Error, tc.want) {
			t.Errorf("a registry at %s redirecting the model's blob to %s: %s %q, want failed mentioning %q", tc.reg, tc.to, v.State, v.Error, tc.want)
		}
	}
	if n := inner.Load(); n > 0 {
		t.Errorf("the loopback server got %d requests through the registry's redirect", n)
	}
}

// TestDataDirClosedToOthers (audit finding 8, low): the database holds
// every identity's keys, the deployments' registry credentials and the
// sessions; it was made 0644, and a data dir that existed before ledge
// (made by hand or by a script with the usual umask: 0755) left it open
// to every local user. Now ledge closes its data dir to others at start
// (saying so once) and makes the database owner-only.
func TestDataDirClosedToOthers(t *testing.T) {
	cfg := testConfig(t)
	cfg.DataDir = filepath.Join(t.TempDir(), "ledge")
	if err := os.Mkdir(cfg.DataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(cfg.DataDir, 0o755) // whatever the umask
	cfg.Agent.Enabled = false
	u := startAppliance(t, cfg)
	if _, err := u.app.Hub().AddIdentity(t.Context(), hub.IdentitySpec{Name: "sensor-1"}); err != nil {
		t.Fatal(err)
	}
	check := func(path string, others os.FileMode) {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&others != 0 {
			t.Errorf("%s is %s: open to others (%s)", path, fi.Mode().Perm(), others)
		}
	}
	check(cfg.DataDir, 0o007)
	for _, f := range []string{"ledge.db", "ledge.db-wal", "ledge.db-shm"} {
		check(filepath.Join(cfg.DataDir, f), 0o077)
	}
	if !strings.Contains(u.logs.String(), "data dir") || !strings.Contains(u.logs.String(), "0755") {
		t.Errorf("the log does not say the data dir was closed to others:\n%s", u.logs.String())
	}
	u.stop()
	// A database made 0644 by an earlier ledge is made owner-only.
	for _, f := range []string{"ledge.db", "ledge.db-wal", "ledge.db-shm"} {
		os.Chmod(filepath.Join(cfg.DataDir, f), 0o644)
	}
	startAppliance(t, cfg)
	for _, f := range []string{"ledge.db", "ledge.db-wal", "ledge.db-shm"} {
		check(filepath.Join(cfg.DataDir, f), 0o077)
	}
}

// TestServiceUnitHardened (audit finding 9, low): the package's systemd
// unit ran ledge with the default umask (its files readable by others)
// and little of systemd's sandboxing (systemd-analyze security: 8.5,
// "EXPOSED"). Now it sets UMask=0027 and the protections that leave
// cameras, GPIO lines, the network and Docker alone; systemd's own
// review of the unit rates it below 4.5.
func TestServiceUnitHardened(t *testing.T) {
	sa := testenv.Command(t, "systemd-analyze", "systemd")
	unit := "../deploy/ledge.service"
	out, err := exec.Command(sa, "security", "--offline=yes", "--no-pager", "--threshold=45", unit).CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze security %s: %v (exposure above 4.5):\n%s", unit, err, out)
	}
	if strings.Contains(string(out), "world-readable") {
		t.Errorf("systemd-analyze: files the service makes are world-readable (UMask)")
	}
	for _, want := range []string{"✓ ProtectKernelTunables=", "✓ RestrictSUIDSGID=", "✓ RestrictNamespaces=~user", "✓ CapabilityBoundingSet=~CAP_SYS_ADMIN"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("systemd-analyze does not find %q in %s", want, unit)
		}
	}
	// What ledge needs stays open: devices (cameras, GPIO) and the network.
	data, _ := os.ReadFile(unit)
	for _, bad := range []string{"PrivateDevices=yes", "DeviceAllow=", "ProtectClock=yes", "PrivateNetwork=yes"} {
		if strings.Contains(string(data), bad) {
			t.Errorf("%s has %s: cameras, GPIO lines or the network would be closed to ledge", unit, bad)
		}
	}
}
