package agent

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"

	"ledge/internal/testenv"
)

// privateDockerd is a second Docker engine of the same installed
// dockerd, with its own data root, exec root (its own containerd),
// socket and containerd namespaces, no default bridge and no iptables
// rules. Restarting it proves what restarting "the" engine would,
// without touching the shared engine other tests run on.
type privateDockerd struct {
	t    testing.TB
	dir  string
	sock string
	cmd  *exec.Cmd
	log  bytes.Buffer
	cli  *client.Client
}

func startPrivateDockerd(t testing.TB) *privateDockerd {
	t.Helper()
	testenv.Command(t, "dockerd", "docker.io")
	images(t)
	dir, err := os.MkdirTemp("/tmp", "ldk") // short: containerd sockets live under it
	if err != nil {
		t.Fatal(err)
	}
	d := &privateDockerd{t: t, dir: dir, sock: filepath.Join(dir, "d.sock")}
	d.start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if d.cmd != nil {
			cs, _ := d.cli.ContainerList(ctx, container.ListOptions{All: true})
			for _, c := range cs {
				d.cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
			}
			nets, _ := d.cli.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("driver", "bridge"))})
			for _, n := range nets {
				d.cli.NetworkRemove(ctx, n.ID)
			}
		}
		d.stop()
		unmountUnder(dir) // a container's rootfs the engine left mounted
		os.RemoveAll(dir)
	})
	// The test image, from the main engine.
	ctx := t.Context()
	rc, err := docker(t).ImageSave(ctx, []string{imgApp})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	resp, err := d.cli.ImageLoad(ctx, rc)
	if err != nil {
		t.Fatalf("load the test image into the private engine: %v", err)
	}
	if err := drain(resp.Body); err != nil {
		t.Fatal(err)
	}
	return d
}

// unmountUnder unmounts whatever is still mounted below dir, deepest
// first.
func unmountUnder(dir string) {
	data, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
			points = append(points, f[1])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(points)))
	for _, p := range points {
		syscall.Unmount(p, syscall.MNT_DETACH)
	}
}

func (d *privateDockerd) start() {
	d.t.Helper()
	d.cmd = exec.Command("dockerd",
		"-H", "unix://"+d.sock,
		"--data-root", filepath.Join(d.dir, "data"),
		"--exec-root", filepath.Join(d.dir, "x"),
		"--pidfile", filepath.Join(d.dir, "d.pid"),
		"--containerd-namespace", "ledge-test-"+testRun,
		"--containerd-plugins-namespace", "ledge-test-plugins-"+testRun,
		"--bridge=none", "--iptables=false", "--ip-masq=false", "--ip-forward=false",
		"--default-address-pool", "base=10.213.0.0/16,size=24",
		"--log-level", "warn")
	d.cmd.Stdout, d.cmd.Stderr = &d.log, &d.log
	if err := d.cmd.Start(); err != nil {
		d.t.Fatalf("start dockerd: %v", err)
	}
	var err error
	if d.cli == nil {
		if d.cli, err = client.NewClientWithOpts(client.WithHost("unix://"+d.sock), client.WithAPIVersionNegotiation()); err != nil {
			d.t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err = d.cli.Ping(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("private dockerd does not answer: %v\n%s", err, d.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (d *privateDockerd) stop() {
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { d.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(40 * time.Second):
		d.cmd.Process.Kill()
		<-done
	}
	d.cmd = nil
}

// TestEngineRestart: when the Docker engine restarts, the agent notices,
// reconnects, and brings every module back, whatever its restart policy
// (the engine stopped them, they did not fail), without recreating them.
func TestEngineRestart(t *testing.T) {
	d := startPrivateDockerd(t)
	ta := newTestAgent(t, withConfig(func(c *Config) { c.DockerHost = "unix://" + d.sock }))
	ta.apply(manifestYAML("1",
		"steady "+imgApp+" always 0",
		"careful "+imgApp+" on-failure 1",
		"once "+imgApp+" never 2"))
	ta.waitState("1", StateConverged, 30*time.Second)
	before := map[string]string{}
	cs, err := d.cli.ContainerList(t.Context(), container.ListOptions{All: true})
	if err != nil || len(cs) != 3 {
		t.Fatalf("private engine has %d containers (%v), want 3", len(cs), err)
	}
	for _, c := range cs {
		before[c.Labels[labelModule]] = c.ID
	}

	d.stop()
	waitFor(t, 20*time.Second, func() (bool, string) {
		return !ta.Reported().Engine.Connected, "the agent did not notice the engine going away"
	})
	d.start()
	waitFor(t, 60*time.Second, func() (bool, string) {
		rep := ta.Reported()
		if !rep.Engine.Connected {
			return false, "not reconnected: " + rep.Engine.Error
		}
		for _, name := range []string{"steady", "careful", "once"} {
			if m := rep.Modules[name]; m.RuntimeStatus != StatusRunning {
				return false, moduleSummary(rep)
			}
		}
		return true, ""
	})
	for name, id := range before {
		in, err := d.cli.ContainerInspect(t.Context(), id)
		if err != nil || !in.State.Running {
			t.Errorf("%s: container %.12s not running after the engine restart (%v)", name, id, err)
		}
	}
}
