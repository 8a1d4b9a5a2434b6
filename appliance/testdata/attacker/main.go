// attacker is the program inside the image the security tests deploy
// (FROM scratch): it tries what a hostile module would, prints what it
// got, and runs until stopped.
//
//	attacker                 read /host/etc/shadow and stat /var/run/docker.sock
//	attacker read-dev PATH   read the first bytes of a device mapped in (a disk?)
//	attacker swap DIR TARGET print what /host holds (READ-HOST ...); then, if
//	                         DIR is a folder, replace it with a link to TARGET
//	                         and exit 1, so that the agent starts it again
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "read-dev":
			readDev(os.Args[2])
		case "swap":
			swap(os.Args[2], os.Args[3])
		}
	} else {
		if b, err := os.ReadFile("/host/etc/shadow"); err == nil {
			line, _, _ := strings.Cut(string(b), "\n")
			user, _, _ := strings.Cut(line, ":")
			fmt.Printf("READ-SHADOW %d bytes, first user %s\n", len(b), user)
		} else {
			fmt.Println("no shadow:", err)
		}
		if _, err := os.Stat("/var/run/docker.sock"); err == nil {
			fmt.Println("DOCKER-SOCKET present")
		}
		fmt.Printf("pid 1 is %s\n", comm(1))
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	<-stop
}

// readDev prints the printable start of a device.
func readDev(path string) {
	f, err := os.Open(path)
	if err != nil {
		fmt.Println("no device:", err)
		return
	}
	defer f.Close()
	b := make([]byte, 64)
	n, err := f.Read(b)
	fmt.Printf("READ-DEV %q %v\n", strings.TrimRight(string(b[:n]), "\x00"), err)
}

// swap is the link swap: a folder the module may write, bound again
// elsewhere, becomes a link to TARGET between two starts.
func swap(dir, target string) {
	if es, err := os.ReadDir("/host"); err == nil {
		for _, e := range es {
			if b, err := os.ReadFile("/host/" + e.Name()); err == nil {
				fmt.Printf("READ-HOST %s %q\n", e.Name(), b)
			}
		}
	}
	if fi, err := os.Lstat(dir); err == nil && fi.IsDir() {
		if err := os.Remove(dir); err != nil {
			fmt.Println("remove:", err)
			return
		}
		if err := os.Symlink(target, dir); err != nil {
			fmt.Println("symlink:", err)
			return
		}
		fmt.Println("SWAPPED", dir, "->", target)
		os.Exit(1)
	}
}

func comm(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}
