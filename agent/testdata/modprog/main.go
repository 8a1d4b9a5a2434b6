// modprog is the program inside the agent's test images (FROM scratch, so
// it is also its own health check). Modes:
//
//	forever            run until SIGTERM, then exit 0
//	exit CODE [DELAY]  exit with CODE after DELAY (default 0)
//	crash              exit 3 after 20 ms
//	unhealthy AFTER    healthy for AFTER, then unhealthy; runs forever
//	health             the health check: exit 0 when healthy
//	probe HOST PORT    print the injected env, resolve HOST, read the CA
//	                   file, dial HOST:PORT; then run forever
package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

const healthAddr = "127.0.0.1:7777"

func main() {
	mode := "forever"
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	arg := func(i int, def string) string {
		if len(os.Args) > i {
			return os.Args[i]
		}
		return def
	}
	switch mode {
	case "forever":
		fmt.Println("up")
		waitTerm()
	case "exit":
		code, _ := strconv.Atoi(arg(2, "0"))
		d, _ := time.ParseDuration(arg(3, "0s"))
		time.Sleep(d)
		os.Exit(code)
	case "crash":
		time.Sleep(20 * time.Millisecond)
		fmt.Println("crashing")
		os.Exit(3)
	case "unhealthy":
		d, _ := time.ParseDuration(arg(2, "1s"))
		l, err := net.Listen("tcp", healthAddr)
		if err != nil {
			fmt.Println(err)
			os.Exit(2)
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		time.Sleep(d)
		l.Close()
		fmt.Println("now unhealthy")
		waitTerm()
	case "health":
		c, err := net.DialTimeout("tcp", healthAddr, 500*time.Millisecond)
		if err != nil {
			os.Exit(1)
		}
		c.Close()
	case "probe":
		host, port := arg(2, ""), arg(3, "")
		for _, k := range []string{"LEDGE_MQTT_URL", "LEDGE_MQTT_USERNAME", "LEDGE_MODULE_ID", "LEDGE_DEVICE_ID",
			"IOTEDGE_MODULEID", "IOTEDGE_GATEWAYHOSTNAME", "EdgeHubConnectionString", "EdgeModuleCACertificateFile"} {
			fmt.Printf("env %s=%s\n", k, os.Getenv(k))
		}
		addrs, err := net.LookupHost(host)
		fmt.Printf("resolve %s %v %v\n", host, addrs, err)
		ca, err := os.ReadFile(os.Getenv("EdgeModuleCACertificateFile"))
		fmt.Printf("ca %q %v\n", ca, err)
		c, err := net.DialTimeout("tcp", net.JoinHostPort(host, port), 3*time.Second)
		if err == nil {
			fmt.Fprintf(c, "hello from %s\n", os.Getenv("LEDGE_MODULE_ID"))
			c.Close()
		}
		fmt.Printf("dial %v\n", err)
		waitTerm()
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", mode)
		os.Exit(64)
	}
}

func waitTerm() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
	os.Exit(0)
}
