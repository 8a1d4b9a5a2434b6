// Package testenv finds the real parts ledge's tests run against (the
// ONNX Runtime library, the shared models and media beside the checkout,
// Docker, mosquitto, ffmpeg, Chromium) and fails a test with the command that
// installs a missing part. It never skips in `make test`: CI runs
// everything. Under -short (`make test-unit`) a test that asks for Docker,
// mosquitto, Chromium, ONNX Runtime or the npm packages Node runs is skipped
// instead, naming the part, and so is one that says it is an integration
// test (Integration).
//
// It is imported only by _test.go files.
package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// heavyParts are the parts `make test-unit` (go test -short) runs without.
var heavyParts = []string{"docker", "mosquitto", "mosquitto_pub", "mosquitto_sub", "chromium", "onnxruntime"}

// unitOnly skips t under -short when it needs part.
func unitOnly(t testing.TB, part string) {
	t.Helper()
	if testing.Short() && slices.Contains(heavyParts, part) {
		t.Skipf("needs %s: not in the unit tests (go test -short)", part)
	}
}

// Integration skips t under -short: it is an integration test (why says
// what makes it one: several processes or hubs, seconds of real time)
// rather than a unit test, and `make test-unit` runs in under a minute
// without it. make test runs it.
func Integration(t testing.TB, why string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("integration test (%s): not in the unit tests (go test -short)", why)
	}
}

// DefaultORTLib is where `make deps` installs ONNX Runtime.
const DefaultORTLib = "/usr/local/lib/ledge/libonnxruntime.so.1"

// Slowdown is how many times longer than usual a test may wait for a
// positive signal: $LEDGE_TEST_SLOWDOWN (default 1), which `make
// test-arm64` sets for tests that run under emulation.
func Slowdown() time.Duration {
	if n, err := strconv.Atoi(os.Getenv("LEDGE_TEST_SLOWDOWN")); err == nil && n > 1 {
		return time.Duration(n)
	}
	return 1
}

// RepoRoot returns the directory holding go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("testenv: cannot locate source file")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// SharedDir returns ../shared beside the checkout (models, media), or
// $LEDGE_SHARED when set.
func SharedDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("LEDGE_SHARED")
	if dir == "" {
		dir = filepath.Join(RepoRoot(t), "..", "shared")
	}
	if _, err := os.Stat(filepath.Join(dir, "models")); err != nil {
		t.Fatalf("testenv: shared test data not found at %s: clone ledge beside ../shared or set LEDGE_SHARED", dir)
	}
	return dir
}

// Model returns the path of a model in ../shared/models.
func Model(t testing.TB, name string) string {
	t.Helper()
	return existing(t, filepath.Join(SharedDir(t), "models", name))
}

// Media returns the path of a file in ../shared/media.
func Media(t testing.TB, name string) string {
	t.Helper()
	return existing(t, filepath.Join(SharedDir(t), "media", name))
}

func existing(t testing.TB, path string) string {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return path
}

// ORTLib returns the ONNX Runtime shared library: $LEDGE_ORT_LIB or the
// `make deps` location.
func ORTLib(t testing.TB) string {
	t.Helper()
	unitOnly(t, "onnxruntime")
	lib := os.Getenv("LEDGE_ORT_LIB")
	if lib == "" {
		lib = DefaultORTLib
	}
	if _, err := os.Stat(lib); err != nil {
		t.Fatalf("testenv: ONNX Runtime library missing (%v): run `make deps` or set LEDGE_ORT_LIB", err)
	}
	return lib
}

// Command returns the path of an installed program, or fails the test
// saying which Debian package provides it.
func Command(t testing.TB, name, debianPackage string) string {
	t.Helper()
	unitOnly(t, name)
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("testenv: %s not found: run `make deps` (apt-get install %s)", name, debianPackage)
	}
	return path
}

// Docker fails the test unless a Docker engine answers.
func Docker(t testing.TB) {
	t.Helper()
	unitOnly(t, "docker")
	Command(t, "docker", "docker.io")
	if out, err := DockerOutput("version", "--format", "{{.Server.Version}}"); err != nil {
		t.Fatalf("testenv: no Docker engine answers (%v: %s): run `make deps`, which starts dockerd", err, out)
	}
}

// dockerTimeout bounds one docker command a test runs: a hung engine fails
// the test (or leaves a container behind) instead of stalling the suite to
// its time limit.
const dockerTimeout = 2 * time.Minute

// DockerOutput runs the docker CLI with args, bounded in time, and returns
// its combined output.
func DockerOutput(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout*Slowdown())
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return out, fmt.Errorf("docker %s: no answer in %v: %w", strings.Join(args, " "), dockerTimeout*Slowdown(), ctx.Err())
	}
	return out, err
}

// RemoveDocker removes, best effort and bounded in time, the containers
// that docker ps --filter filter lists and then the networks named: a
// test's clean-up of what its appliance made.
func RemoveDocker(filter string, networks ...string) {
	if filter != "" {
		out, err := DockerOutput("ps", "-aq", "--filter", filter)
		if ids := strings.Fields(string(out)); err == nil && len(ids) > 0 {
			DockerOutput(append([]string{"rm", "-f"}, ids...)...)
		}
	}
	if len(networks) > 0 {
		DockerOutput(append([]string{"network", "rm"}, networks...)...)
	}
}

// ArtifactDir returns a folder for test artifacts (screenshots), created
// under $LEDGE_ARTIFACTS or <repo>/test-artifacts/<name>.
func ArtifactDir(t testing.TB, name string) string {
	t.Helper()
	root := os.Getenv("LEDGE_ARTIFACTS")
	if root == "" {
		root = filepath.Join(RepoRoot(t), "test-artifacts")
	}
	dir := filepath.Join(root, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return dir
}

// Chromium returns the path of Debian's chromium.
func Chromium(t testing.TB) string {
	t.Helper()
	return Command(t, "chromium", "chromium")
}

// AzureSDK returns the folder where `make deps` installs the Azure IoT SDK
// for Node (appliance/testdata/azure-sdk: azure-iot-device and
// azure-iot-device-mqtt from npm, and the scripts that drive them), or
// fails the test saying how to install it; under -short it skips the test.
func AzureSDK(t testing.TB) string {
	t.Helper()
	return NodePackages(t, filepath.Join(RepoRoot(t), "appliance", "testdata", "azure-sdk"), "azure-iot-device-mqtt")
}

// NodePackages returns dir, a folder of the checkout where `make deps`
// installs npm packages (deploy/deps.sh runs npm ci there) and the
// scripts that drive them, once Node and the package pkg are there;
// otherwise it fails the test saying how to install them. Under -short
// the test is skipped: Node and the npm packages are not parts the unit
// tests need.
func NodePackages(t testing.TB, dir, pkg string) string {
	t.Helper()
	if testing.Short() {
		t.Skipf("needs Node and the npm packages make deps installs in %s: not in the unit tests (go test -short)", dir)
	}
	Command(t, "node", "nodejs")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg)); err != nil {
		t.Fatalf("testenv: the npm package %s is not installed in %s: run make deps (deploy/deps.sh runs npm ci there)", pkg, dir)
	}
	return dir
}
