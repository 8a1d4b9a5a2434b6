// attacker is the program inside the image the security tests deploy
// (FROM scratch): it tries what a hostile module would, prints what it
// got, and runs until stopped.
//
//	attacker          read /host/etc/shadow and stat /var/run/docker.sock
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
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
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	<-stop
}

func comm(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}
