package appliance

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ledge/agent"
	"ledge/internal/fault"
	"ledge/internal/testenv"
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
