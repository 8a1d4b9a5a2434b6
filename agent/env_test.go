package agent

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/client"

	"ledge/internal/testenv"
)

// The agent's tests run against the real Docker engine. Everything they
// create carries the run's id: images are labelled io.ledge.test=<run>,
// containers belong to instances "lt-<run>-<n>", the module network is
// "ledge-test-<run>". TestMain removes all of it at the end, whatever
// happened; each test also removes its own containers when it ends.

var testRun = func() string {
	if r := os.Getenv("LEDGE_AGENT_TEST_RUN"); r != "" {
		return r // a child process of this run
	}
	b := make([]byte, 4)
	rand.Read(b)
	r := hex.EncodeToString(b)
	os.Setenv("LEDGE_AGENT_TEST_RUN", r)
	return r
}()

// Test images, built once per run from testdata/modprog.
var (
	imgApp    = "ledge-agent-test/app:" + testRun        // modprog, default "forever"
	imgApp2   = "ledge-agent-test/app:" + testRun + "-b" // the same program under another tag
	imgHealth = "ledge-agent-test/health:" + testRun     // with a HEALTHCHECK
	testNet   = "ledge-test-" + testRun
)

func TestMain(m *testing.M) {
	if os.Getenv("LEDGE_AGENT_HELPER_DB") != "" {
		os.Exit(helperAgent()) // a child process of TestKill9
	}
	cleanupStale()
	code := m.Run()
	cleanupRun()
	os.Exit(code)
}

// cleanupStale removes what earlier runs killed before their cleanup (a
// test binary timing out) left behind: containers and networks of
// these tests older than an hour.
func cleanupStale() {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := cli.Ping(ctx); err != nil {
		return
	}
	old := time.Now().Add(-time.Hour)
	cs, _ := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", labelManaged+"=true"))})
	for _, c := range cs {
		if strings.HasPrefix(c.Labels[labelInstance], "lt-") && time.Unix(c.Created, 0).Before(old) {
			cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
		}
	}
	nets, _ := cli.NetworkList(ctx, network.ListOptions{})
	for _, n := range nets {
		if strings.HasPrefix(n.Name, "ledge-test-") && n.Created.Before(old) {
			cli.NetworkRemove(ctx, n.ID)
		}
	}
	// Images are left alone: a cached build may carry an old creation
	// time while another run uses it. They are small and tagged with their
	// run.
}

var (
	dockerOnce sync.Once
	dockerCli  *client.Client
	dockerErr  error
)

// docker returns a client of the main engine, failing the test when
// there is none.
func docker(t testing.TB) *client.Client {
	t.Helper()
	testenv.Docker(t)
	dockerOnce.Do(func() {
		dockerCli, dockerErr = client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	})
	if dockerErr != nil {
		t.Fatalf("docker client: %v", dockerErr)
	}
	return dockerCli
}

var (
	imagesOnce sync.Once
	imagesErr  error
)

// images builds the test images once per run.
func images(t testing.TB) {
	t.Helper()
	cli := docker(t)
	imagesOnce.Do(func() { imagesErr = buildImages(cli) })
	if imagesErr != nil {
		t.Fatalf("build test images: %v", imagesErr)
	}
}

func buildImages(cli *client.Client) error {
	dir, err := os.MkdirTemp("", "ledge-agent-img")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "app")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./testdata/modprog")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build modprog: %v: %s", err, out)
	}
	app, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	for _, img := range []struct{ tag, dockerfile string }{
		{imgApp, "FROM scratch\nCOPY app /app\nENTRYPOINT [\"/app\"]\nCMD [\"forever\"]\n"},
		{imgHealth, "FROM scratch\nCOPY app /app\nENTRYPOINT [\"/app\"]\nCMD [\"unhealthy\", \"2s\"]\n" +
			"HEALTHCHECK --interval=300ms --timeout=1s --retries=1 CMD [\"/app\", \"health\"]\n"},
	} {
		if err := buildImage(cli, img.tag, img.dockerfile, map[string][]byte{"app": app}); err != nil {
			return err
		}
	}
	return cli.ImageTag(context.Background(), imgApp, imgApp2)
}

// buildImage builds tag from a Dockerfile and context files, labelled as
// this run's.
func buildImage(cli *client.Client, tag, dockerfile string, files map[string][]byte) error {
	var ctxTar bytes.Buffer
	tw := tar.NewWriter(&ctxTar)
	files["Dockerfile"] = []byte(dockerfile)
	for name, data := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(data))})
		tw.Write(data)
	}
	tw.Close()
	resp, err := cli.ImageBuild(context.Background(), &ctxTar, build.ImageBuildOptions{
		Tags: []string{tag}, Remove: true, ForceRemove: true, Labels: map[string]string{"io.ledge.test": testRun},
	})
	if err != nil {
		return fmt.Errorf("build %s: %w", tag, err)
	}
	if err := drain(resp.Body); err != nil {
		return fmt.Errorf("build %s: %w", tag, err)
	}
	return nil
}

// drain reads a JSON message stream (build, push, load), returning the
// first error it reports.
func drain(rc io.ReadCloser) error {
	defer rc.Close()
	dec := json.NewDecoder(rc)
	for {
		var m struct {
			Error string `json:"error"`
		}
		if err := dec.Decode(&m); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		if m.Error != "" {
			return fmt.Errorf("%s", m.Error)
		}
	}
}

// cleanupRun removes every container, network and image of this run,
// and stops the helpers it started.
func cleanupRun() {
	stopHelpers()
	if dockerCli == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	removeInstances(ctx, dockerCli, "lt-"+testRun+"-")
	nets, _ := dockerCli.NetworkList(ctx, network.ListOptions{})
	for _, n := range nets {
		if strings.Contains(n.Name, testRun) {
			dockerCli.NetworkRemove(ctx, n.ID)
		}
	}
	imgs, _ := dockerCli.ImageList(ctx, image.ListOptions{All: true})
	for _, im := range imgs {
		ours := im.Labels["io.ledge.test"] == testRun
		for _, tag := range im.RepoTags {
			ours = ours || strings.Contains(tag, testRun)
		}
		if ours {
			dockerCli.ImageRemove(ctx, im.ID, image.RemoveOptions{Force: true, PruneChildren: true})
		}
	}
}

// removeInstances removes the containers of every instance whose name
// starts with prefix.
func removeInstances(ctx context.Context, cli *client.Client, prefix string) {
	cs, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", labelManaged+"=true"))})
	if err != nil {
		return
	}
	for _, c := range cs {
		if strings.HasPrefix(c.Labels[labelInstance], prefix) {
			cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
		}
	}
}

// helpers are processes tests start (registry, mosquitto, dockerd).
var (
	helpersMu sync.Mutex
	helpers   []func()
)

func addHelper(stop func()) {
	helpersMu.Lock()
	helpers = append(helpers, stop)
	helpersMu.Unlock()
}

func stopHelpers() {
	helpersMu.Lock()
	defer helpersMu.Unlock()
	for i := len(helpers) - 1; i >= 0; i-- {
		helpers[i]()
	}
	helpers = nil
}

// freePort returns a loopback TCP port nobody listens on now.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitListening waits until addr accepts connections.
func waitListening(addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s does not accept connections after %s", addr, d)
}

// testRegistry is a local registry (Debian's docker-registry) with
// htpasswd auth on a loopback port, holding imgApp as
// <addr>/ledge-test/app:<run>.
type testRegistry struct {
	addr, user, password string
	image                string // the pushed image, not present locally
}

var (
	registryOnce sync.Once
	registryVal  *testRegistry
	registryErr  error
)

func localRegistry(t testing.TB) *testRegistry {
	t.Helper()
	bin := testenv.Command(t, "docker-registry", "docker-registry")
	htpasswd := testenv.Command(t, "htpasswd", "apache2-utils")
	images(t)
	cli := docker(t)
	registryOnce.Do(func() { registryVal, registryErr = startRegistry(cli, bin, htpasswd, freePort(t)) })
	if registryErr != nil {
		t.Fatalf("local registry: %v", registryErr)
	}
	return registryVal
}

func startRegistry(cli *client.Client, bin, htpasswd string, port int) (*testRegistry, error) {
	dir, err := os.MkdirTemp("", "ledge-registry")
	if err != nil {
		return nil, err
	}
	r := &testRegistry{addr: fmt.Sprintf("127.0.0.1:%d", port), user: "ledge", password: "pw-" + testRun}
	out, err := exec.Command(htpasswd, "-Bbn", r.user, r.password).Output()
	if err != nil {
		return nil, fmt.Errorf("htpasswd: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "htpasswd"), out, 0o600); err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`version: 0.1
log: {level: error}
storage:
  filesystem: {rootdirectory: %s}
  delete: {enabled: true}
http: {addr: "%s"}
auth:
  htpasswd: {realm: ledge-test, path: %s}
`, filepath.Join(dir, "data"), r.addr, filepath.Join(dir, "htpasswd"))
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "serve", cfgPath)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	addHelper(func() { cmd.Process.Kill(); cmd.Wait(); os.RemoveAll(dir) })
	if err := waitListening(r.addr, 10*time.Second); err != nil {
		return nil, fmt.Errorf("%w: %s", err, stderr.String())
	}
	// Push an image with a layer of its own (4 MB of noise, so a pull has
	// bytes to report), then remove it locally so only a pull brings it.
	ctx := context.Background()
	r.image = r.addr + "/ledge-test/app:" + testRun
	noise := make([]byte, 4<<20)
	rand.Read(noise)
	if err := buildImage(cli, r.image, "FROM "+imgApp+"\nCOPY noise /noise\n", map[string][]byte{"noise": noise}); err != nil {
		return nil, err
	}
	auth, _ := registry.EncodeAuthConfig(registry.AuthConfig{Username: r.user, Password: r.password, ServerAddress: r.addr})
	rc, err := cli.ImagePush(ctx, r.image, image.PushOptions{RegistryAuth: auth})
	if err != nil {
		return nil, fmt.Errorf("push: %w", err)
	}
	if err := drain(rc); err != nil {
		return nil, fmt.Errorf("push %s: %w", r.image, err)
	}
	if _, err := cli.ImageRemove(ctx, r.image, image.RemoveOptions{PruneChildren: true}); err != nil {
		return nil, fmt.Errorf("untag %s: %w", r.image, err)
	}
	return r, nil
}

// mosquitto runs a real mosquitto on a loopback port; stop it and start
// it again with the returned functions.
type mosquittoProc struct {
	addr string
	conf string
	bin  string
	mu   sync.Mutex
	cmd  *exec.Cmd
	t    testing.TB
}

func startMosquitto(t testing.TB) *mosquittoProc {
	t.Helper()
	bin := testenv.Command(t, "mosquitto", "mosquitto")
	dir := t.TempDir()
	port := freePort(t)
	m := &mosquittoProc{addr: fmt.Sprintf("127.0.0.1:%d", port), bin: bin, t: t, conf: filepath.Join(dir, "mosquitto.conf")}
	conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\n", port, dir)
	if err := os.WriteFile(m.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	m.start()
	t.Cleanup(m.stop)
	return m
}

func (m *mosquittoProc) start() {
	m.t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	cmd := exec.Command(m.bin, "-c", m.conf)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	m.cmd = cmd
	if err := waitListening(m.addr, 10*time.Second); err != nil {
		m.t.Fatalf("mosquitto: %v: %s", err, out.String())
	}
}

func (m *mosquittoProc) stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		m.cmd.Process.Signal(os.Interrupt)
		m.cmd.Wait()
		m.cmd = nil
	}
}
