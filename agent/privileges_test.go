package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ledge/agent/manifest"
	"ledge/internal/fault"
)

// TestPrivilegePolicy runs the policy over createOptions as manifests
// write them: each elevated setting is named with its key, and what
// cameras and modules need passes.
func TestPrivilegePolicy(t *testing.T) {
	data := t.TempDir()
	p := NewPolicy(Config{AllowedBindSources: []string{"/srv/media"}}, data)
	own := ModuleDataDir(data, "m")
	for _, tc := range []struct {
		co   string
		want []string // settings flagged, "" for none
		key  string   // key of the first one
	}{
		{`{}`, nil, ""},
		{`{"HostConfig": {"Privileged": true}}`, []string{"HostConfig.Privileged"}, keyAllowElevated},
		{`{"HostConfig": {"CapAdd": ["NET_ADMIN"]}}`, []string{"HostConfig.CapAdd"}, keyAllowElevated},
		{`{"HostConfig": {"CapDrop": ["ALL"], "ReadonlyRootfs": true}}`, nil, ""},
		{`{"HostConfig": {"NetworkMode": "host", "PidMode": "host", "IpcMode": "host", "UTSMode": "host", "UsernsMode": "host", "CgroupnsMode": "host"}}`,
			[]string{"HostConfig.NetworkMode", "HostConfig.PidMode", "HostConfig.IpcMode", "HostConfig.UTSMode", "HostConfig.UsernsMode", "HostConfig.CgroupnsMode"}, keyAllowElevated},
		{`{"HostConfig": {"NetworkMode": "container:ledge", "PidMode": "container:x"}}`, []string{"HostConfig.NetworkMode", "HostConfig.PidMode"}, keyAllowElevated},
		{`{"HostConfig": {"NetworkMode": "bridge", "IpcMode": "shareable", "PidMode": ""}}`, nil, ""},
		{`{"HostConfig": {"SecurityOpt": ["no-new-privileges", "apparmor=docker-default", "seccomp=unconfined", "label:disable", "apparmor=unconfined", "systempaths=unconfined"]}}`,
			[]string{"HostConfig.SecurityOpt[2]", "HostConfig.SecurityOpt[3]", "HostConfig.SecurityOpt[4]", "HostConfig.SecurityOpt[5]"}, keyAllowElevated},
		{`{"HostConfig": {"SecurityOpt": ["seccomp={\"defaultAction\":\"SCMP_ACT_ALLOW\"}"]}}`, []string{"HostConfig.SecurityOpt[0]"}, keyAllowElevated},
		{`{"HostConfig": {"Binds": ["/:/host"]}}`, []string{"HostConfig.Binds[0]"}, keyAllowElevated},
		{`{"HostConfig": {"Binds": ["/var/run/docker.sock:/s", "/run:/r", "/var/run/../run/docker.sock:/t"]}}`,
			[]string{"HostConfig.Binds[0]", "HostConfig.Binds[1]", "HostConfig.Binds[2]"}, keyAllowElevated},
		{`{"HostConfig": {"Binds": ["/etc:/etc:ro"]}}`, []string{"HostConfig.Binds[0]"}, keyBindSources + " or " + keyAllowElevated},
		{`{"HostConfig": {"Binds": ["/srv/media/cam1:/media:ro", "/srv/media:/all", "cache:/cache", "` + own + `/x:/data"]}}`, nil, ""},
		{`{"HostConfig": {"Binds": ["/srv/mediax:/m", "/srv/media/../../etc:/e"]}}`, []string{"HostConfig.Binds[0]", "HostConfig.Binds[1]"}, keyBindSources + " or " + keyAllowElevated},
		{`{"HostConfig": {"Binds": ["` + data + `:/d", "` + filepath.Join(data, "hub") + `:/h", "` + ModuleDataDir(data, "other") + `:/o"]}}`,
			[]string{"HostConfig.Binds[0]", "HostConfig.Binds[1]", "HostConfig.Binds[2]"}, keyAllowElevated},
		{`{"HostConfig": {"Mounts": [{"Type": "bind", "Source": "/", "Target": "/h"}, {"Type": "volume", "Source": "v", "Target": "/v"}, {"Type": "tmpfs", "Target": "/t"}]}}`,
			[]string{"HostConfig.Mounts[0]"}, keyAllowElevated},
		{`{"HostConfig": {"Mounts": [{"Type": "volume", "Source": "v", "Target": "/v", "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": {"type": "none", "o": "bind", "device": "/"}}}}]}}`,
			[]string{"HostConfig.Mounts[0]"}, keyAllowElevated},
		{`{"HostConfig": {"Devices": [{"PathOnHost": "/dev/video0", "PathInContainer": "/dev/video0", "CgroupPermissions": "rwm"}], "DeviceRequests": [{"Driver": "nvidia", "Count": -1}]}}`, nil, ""},
		{`{"HostConfig": {"DeviceCgroupRules": ["b *:* rwm"], "VolumesFrom": ["other"], "MaskedPaths": [], "ReadonlyPaths": []}}`,
			[]string{"HostConfig.DeviceCgroupRules", "HostConfig.VolumesFrom", "HostConfig.MaskedPaths", "HostConfig.ReadonlyPaths"}, keyAllowElevated},
		{`{"NetworkingConfig": {"EndpointsConfig": {"host": {}}}}`, []string{"NetworkingConfig.EndpointsConfig"}, keyAllowElevated},
	} {
		co, err := manifest.DecodeCreateOptions([]byte(tc.co))
		if err != nil {
			t.Fatalf("%s: %v", tc.co, err)
		}
		els := p.Elevations("m", &co.Config, co.HostConfig, co.NetworkingConfig)
		var got []string
		for _, e := range els {
			got = append(got, e.Setting)
			if e.Module != "m" || e.Why == "" || e.Value == "" && e.Setting != "HostConfig.MaskedPaths" && e.Setting != "HostConfig.ReadonlyPaths" {
				t.Errorf("%s: incomplete %+v", tc.co, e)
			}
		}
		if strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("%s: flagged %v, want %v", tc.co, got, tc.want)
			continue
		}
		if len(els) > 0 && els[0].Key != tc.key {
			t.Errorf("%s: key %q, want %q", tc.co, els[0].Key, tc.key)
		}
		_, err = p.check("m", &co.Config, co.HostConfig, co.NetworkingConfig)
		if (err != nil) != (len(tc.want) > 0) || err != nil && !fault.Is(err, fault.Forbidden) {
			t.Errorf("%s: check %v", tc.co, err)
		}
		allow := *p
		allow.AllowElevated = true
		if els2, err := allow.check("m", &co.Config, co.HostConfig, co.NetworkingConfig); err != nil || len(els2) != len(els) {
			t.Errorf("%s: with allowElevatedPermissions: %v %v", tc.co, els2, err)
		}
	}
}

// TestPrivilegePolicyFollowsLinks: a link a module left in its own data
// dir, pointing at /, does not get the host bound on the next deployment.
func TestPrivilegePolicyFollowsLinks(t *testing.T) {
	data := t.TempDir()
	own := ModuleDataDir(data, "m")
	os.MkdirAll(own, 0o755)
	if err := os.Symlink("/", filepath.Join(own, "root")); err != nil {
		t.Fatal(err)
	}
	p := NewPolicy(Config{}, data)
	co, _ := manifest.DecodeCreateOptions([]byte(`{"HostConfig": {"Binds": ["` + own + `/root:/host", "` + own + `/root/etc/x:/x", "` + own + `/new/dir:/n"]}}`))
	if els := p.Elevations("m", &co.Config, co.HostConfig, nil); len(els) != 0 {
		t.Fatalf("without resolving, the paths are the module's own: %v", els)
	}
	p.Resolve = true
	els := p.Elevations("m", &co.Config, co.HostConfig, nil)
	if len(els) != 2 || !strings.Contains(els[0].Why, "link to /") || els[1].Setting != "HostConfig.Binds[1]" {
		t.Fatalf("resolved: %v", els)
	}
}

// TestConfigBindSources: allowedBindSources must be absolute, and not /.
func TestConfigBindSources(t *testing.T) {
	for _, tc := range []struct {
		srcs []string
		want string
	}{
		{[]string{"/srv/media", "/mnt/usb/"}, ""},
		{[]string{"media"}, "allowedBindSources[0]"},
		{[]string{"/srv", "//"}, "allowedBindSources[1]"},
	} {
		cfg := DefaultConfig()
		cfg.AllowedBindSources = tc.srcs
		err := cfg.Validate()
		if (err == nil) != (tc.want == "") || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.srcs, err, tc.want)
		}
	}
}

// FuzzPrivilegePolicy: whatever createOptions decode to, the policy does
// not panic, and a container that is privileged, shares the host's
// network, or binds / is always flagged.
func FuzzPrivilegePolicy(f *testing.F) {
	for _, s := range []string{`{}`, `{"HostConfig": {"Privileged": true}}`, `{"HostConfig": {"Binds": ["/./:/h"]}}`,
		`{"HostConfig": {"NetworkMode": "host", "Mounts": [{"Type": "bind", "Source": "//", "Target": "/x"}]}}`,
		`{"HostConfig": {"SecurityOpt": ["label=type:spc_t"], "Binds": ["/srv/../:/x"]}}`} {
		f.Add([]byte(s))
	}
	p := NewPolicy(Config{AllowedBindSources: []string{"/srv"}}, "/var/lib/ledge")
	f.Fuzz(func(t *testing.T, data []byte) {
		co, err := manifest.DecodeCreateOptions(data)
		if err != nil {
			return
		}
		els := p.Elevations("m", &co.Config, co.HostConfig, co.NetworkingConfig)
		h := co.HostConfig
		if h == nil {
			return
		}
		must := h.Privileged || h.NetworkMode == "host"
		for _, b := range h.Binds {
			src, _, _ := strings.Cut(b, ":")
			must = must || strings.HasPrefix(src, "/") && filepath.Clean(src) == "/"
		}
		if must && len(els) == 0 {
			raw, _ := json.Marshal(h)
			t.Fatalf("not flagged: %s", raw)
		}
	})
}

// TestPolicyTightenedOnPersistedDeployment: a deployment applied while
// elevated settings were allowed, restarted with them refused, does not
// keep its elevated container: the module is reported failed with the
// setting and the key, and the others run on.
func TestPolicyTightenedOnPersistedDeployment(t *testing.T) {
	allow := withConfig(func(c *Config) { c.AllowElevatedPermissions = true })
	ta := newTestAgent(t, allow)
	doc := manifestYAML("1", "plain "+imgApp+" always 1") +
		"  netadm:\n    image: " + imgApp + "\n    restartPolicy: always\n    imagePullPolicy: never\n    createOptions: {HostConfig: {CapAdd: [NET_ADMIN]}}\n"
	ta.apply(doc)
	rep := ta.waitState("1", StateConverged, 60*time.Second)
	if e := rep.Modules["netadm"].Elevated; len(e) != 1 || !strings.Contains(e[0], "NET_ADMIN") {
		t.Fatalf("reported elevated settings: %v", e)
	}
	ta.stop()
	ta.start()
	waitFor(t, 30*time.Second, func() (bool, string) {
		m := ta.Reported().Modules["netadm"]
		_, has := ta.containers()["netadm"]
		return m.RuntimeStatus == StatusFailed && !has, fmt.Sprintf("netadm %s (%s), container %v", m.RuntimeStatus, m.StatusDescription, has)
	})
	m := ta.Reported().Modules["netadm"]
	for _, want := range []string{"HostConfig.CapAdd", "agent.allowElevatedPermissions"} {
		if !strings.Contains(m.StatusDescription, want) {
			t.Errorf("netadm's reason %q lacks %q", m.StatusDescription, want)
		}
	}
	if p := ta.Reported().Modules["plain"]; p.RuntimeStatus != StatusRunning {
		t.Errorf("plain is %s (%s)", p.RuntimeStatus, p.StatusDescription)
	}
}
