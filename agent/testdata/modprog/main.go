// modprog is the program inside the agent's test images (FROM scratch, so
// it is also its own health check). Modes:
//
//	forever            run until SIGTERM, then exit 0
//	exit CODE [DELAY]  exit with CODE after DELAY (default 0)
//	crash              exit 3 after 20 ms
//	crashes N          crash the first N starts of its container (counted
//	                   in a file of its own), then run forever
//	unhealthy AFTER    healthy for AFTER, then unhealthy; runs forever
//	health             the health check: exit 0 when healthy
//	probe HOST PORT    print the injected env, resolve HOST, read the CA
//	                   file, dial HOST:PORT; then run forever
//	workload           call the workload API at $IOTEDGE_WORKLOADURI as the
//	                   Azure SDKs do (and as another module), print what
//	                   it answers; then run forever
package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
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
	case "crashes":
		n, _ := strconv.Atoi(arg(2, "1"))
		b, _ := os.ReadFile("/crashes")
		done, _ := strconv.Atoi(string(b))
		if done < n {
			os.WriteFile("/crashes", []byte(strconv.Itoa(done+1)), 0o644)
			time.Sleep(20 * time.Millisecond)
			fmt.Println("crashing", done+1, "of", n)
			os.Exit(3)
		}
		fmt.Println("up after", n, "crashes")
		waitTerm()
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
	case "workload":
		workloadCalls()
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

// workloadCalls calls the workload API as a module would, and as a
// module that tries to sign for another.
func workloadCalls() {
	keyInEnv := false
	for _, kv := range os.Environ() {
		keyInEnv = keyInEnv || strings.Contains(kv, "SharedAccessKey")
	}
	fmt.Printf("uid %d key-in-env %v connection-string %q\n", os.Getuid(), keyInEnv, os.Getenv("EdgeHubConnectionString"))
	sock := strings.TrimPrefix(os.Getenv("IOTEDGE_WORKLOADURI"), "unix://")
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	call := func(name, method, path, body string) {
		req, _ := http.NewRequest(method, "http://workload"+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			fmt.Printf("%s error %v\n", name, err)
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("%s %d %s\n", name, resp.StatusCode, strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", "|"))
	}
	mod, gen := url.PathEscape(os.Getenv("IOTEDGE_MODULEID")), url.PathEscape(os.Getenv("IOTEDGE_MODULEGENERATIONID"))
	v := "?api-version=2018-06-28"
	sign := `{"keyId":"primary","algo":"HMACSHA256","data":"` + base64.StdEncoding.EncodeToString([]byte("hello")) + `"}`
	call("trust", "GET", "/trust-bundle"+v, "")
	call("sign-self", "POST", "/modules/"+mod+"/genid/"+gen+"/sign"+v, sign)
	call("sign-other", "POST", "/modules/other/genid/"+gen+"/sign"+v, sign)
	call("sign-genid", "POST", "/modules/"+mod+"/genid/stale/sign"+v, sign)
	call("no-version", "POST", "/modules/"+mod+"/genid/"+gen+"/sign", sign)
	exp := time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339)
	call("cert-self", "POST", "/modules/"+mod+"/genid/"+gen+"/certificate/server"+v, `{"commonName":"`+os.Getenv("IOTEDGE_MODULEID")+`","expiration":"`+exp+`"}`)
	call("cert-hub", "POST", "/modules/"+mod+"/genid/"+gen+"/certificate/server"+v, `{"commonName":"`+os.Getenv("IOTEDGE_GATEWAYHOSTNAME")+`","expiration":"`+exp+`"}`)
	fmt.Println("workload done")
}
