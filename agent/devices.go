package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
)

// Devices a module may not map without agent.allowElevatedPermissions:
// what gives it the host's disks (any block device, raw SCSI, NVMe
// controllers, MTD flash), memory or I/O ports (/dev/mem, /dev/kmem,
// /dev/port) or model-specific registers (/dev/cpu/N/msr): root on the
// host. Docker maps every device below a folder (--device /dev), so a
// folder holding one is refused too. Cameras, GPIO chips, serial ports,
// I2C/SPI, sound, GPUs and /dev/bus/usb (a Coral stick) pass.

// deviceNameRe matches, by name, devices of the host's disks and memory:
// how the policy judges a mapping away from the appliance (`deploy check
// --offline`), and a second check on it.
var deviceNameRe = regexp.MustCompile(`^/dev/(` +
	`(sd|hd|vd|xvd)[a-z]+[0-9]*|nvme[0-9]+(n[0-9]+(p[0-9]+)?)?|ng[0-9]+n[0-9]+|mmcblk[0-9]+(p[0-9]+|boot[0-9]+|rpmb)?|` +
	`loop[0-9]+|dm-[0-9]+|md[0-9]+(p[0-9]+)?|sr[0-9]+|sg[0-9]+|mtd[0-9]+(ro)?|mtdblock[0-9]+|nbd[0-9]+|zram[0-9]+|ram[0-9]+|ubi[0-9_]*|` +
	`mem|kmem|port|` +
	`(disk|block|mapper|md|cpu)(/.*)?)$`)

// Character devices (major, minor; -1: any minor) that give memory, raw
// disks or CPU registers, whatever they are called.
var dangerousChar = []struct {
	major, minor int64
	what         string
}{
	{1, 1, "the host's physical memory"}, {1, 2, "the kernel's memory"}, {1, 4, "the host's I/O ports"},
	{21, -1, "raw SCSI access to a disk"}, {90, -1, "raw flash (MTD)"},
	{202, -1, "the CPU's model-specific registers"}, {203, -1, "CPUID of the host"},
}

// maxDeviceWalk bounds the walk of a folder mapped as devices.
const maxDeviceWalk = 10000

// device says why mapping path (a Devices entry's PathOnHost) is
// elevated, or "". With Resolve the path is looked at on this machine
// (links followed, folders walked as Docker walks them); without, by name.
func (p *Policy) device(path string) string {
	const byName = "gives a disk, memory or CPU registers of the host (root on the host)"
	clean := filepath.Clean(path)
	if clean == "/dev" || clean == "/" {
		return "maps every device of the host (its disks too)"
	}
	if p.Resolve {
		if real, err := filepath.EvalSymlinks(clean); err == nil {
			if why := resolvedDevice(real); why != "" {
				if real != clean {
					return "is a link to " + real + ", which " + strings.TrimPrefix(why, "is ")
				}
				return why
			}
		}
	}
	if deviceNameRe.MatchString(clean) {
		return byName
	}
	return ""
}

// resolvedDevice judges a device path on this machine, links resolved:
// a node by its type and number, a folder by every node Docker would map
// from it (it walks without following links).
func resolvedDevice(real string) string {
	if real == "/dev" || real == "/" {
		return "maps every device of the host (its disks too)"
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "" // Docker refuses what does not exist
	}
	if !fi.IsDir() {
		if why := deviceNode(fi); why != "" {
			return why
		}
		if deviceNameRe.MatchString(real) {
			return "gives a disk, memory or CPU registers of the host (root on the host)"
		}
		return ""
	}
	var why string
	n := 0
	walkErr := filepath.WalkDir(real, func(q string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if n++; n > maxDeviceWalk {
			why = fmt.Sprintf("maps a folder of more than %d entries as devices", maxDeviceWalk)
			return fs.SkipAll
		}
		if d.Type()&fs.ModeDevice == 0 {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		w := deviceNode(info)
		if w == "" && deviceNameRe.MatchString(q) {
			w = "gives a disk, memory or CPU registers of the host (root on the host)"
		}
		if w != "" {
			why = "maps every device in " + real + ", among them " + q + ", which " + strings.TrimPrefix(w, "is ")
			return fs.SkipAll
		}
		return nil
	})
	if walkErr != nil && !errors.Is(walkErr, fs.SkipAll) {
		return ""
	}
	if why == "" && deviceNameRe.MatchString(real) {
		why = "maps a folder of the host's disks"
	}
	return why
}

// deviceNode says why a device node is elevated, or "".
func deviceNode(fi fs.FileInfo) string {
	if fi.Mode()&fs.ModeDevice == 0 {
		return ""
	}
	if fi.Mode()&fs.ModeCharDevice == 0 {
		return "is a block device: it gives a disk of the host (root on the host)"
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	major := int64((st.Rdev>>8)&0xfff | (st.Rdev>>32)&^0xfff)
	minor := int64(st.Rdev&0xff | (st.Rdev>>12)&^0xff)
	for _, d := range dangerousChar {
		if d.major == major && (d.minor < 0 || d.minor == minor) {
			return "gives " + d.what + " (root on the host)"
		}
	}
	return ""
}
