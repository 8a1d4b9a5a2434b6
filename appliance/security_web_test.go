package appliance

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"ledge/hub"
	"ledge/web"
)

// Security tests of the web server (issue 12, findings 3 to 7), each with
// its attack against a whole appliance.

// postStream sends a request head over a raw connection, then up to total
// body bytes, stopping when the server answers or stops reading. It
// returns the status line and how many body bytes the server took.
func postStream(t *testing.T, addr, head string, total int64) (string, int64) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	status := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(conn).ReadString('\n')
		status <- strings.TrimSpace(line)
	}()
	chunk := bytes.Repeat([]byte("a"), 64<<10)
	var sent int64
	for sent < total {
		select {
		case s := <-status:
			return s, sent
		default:
		}
		conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
		n, err := conn.Write(chunk)
		sent += int64(n)
		if err != nil {
			break
		}
	}
	select {
	case s := <-status:
		return s, sent
	case <-time.After(10 * time.Second):
		return "no answer", sent
	}
}

// TestLoginBodyCapped (finding 3): a 100 MB POST to /login without
// credentials, multipart or form-encoded, with or without a length, and
// to the JSON login, is answered before most of it is read.
func TestLoginBodyCapped(t *testing.T) {
	d := startDashboard(t, nil)
	addr := d.app.webAddr()
	const total = 100 << 20
	for _, tc := range []struct {
		name, head, want string
	}{
		{"multipart", "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=XX\r\nContent-Length: 104857600\r\n\r\n", "415"},
		{"form with a length", "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 104857600\r\n\r\n", "413"},
		{"form chunked", "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n6400000\r\n", "413"},
		{"multipart chunked", "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=XX\r\nTransfer-Encoding: chunked\r\n\r\n6400000\r\n", "415"},
		{"json chunked", "POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n6400000\r\n", "413"},
		{"api without credentials", "POST /api/v1/deployments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 104857600\r\n\r\n", "413"},
	} {
		start := time.Now()
		status, sent := postStream(t, addr, tc.head, total)
		t.Logf("%s: %q after %d bytes in %s", tc.name, status, sent, time.Since(start).Round(time.Millisecond))
		if !strings.Contains(status, " "+tc.want+" ") {
			t.Errorf("%s: answered %q, want %s", tc.name, status, tc.want)
		}
		// What loopback socket buffers hold is sent but not read.
		if sent > 24<<20 {
			t.Errorf("%s: the server took %d MB of the body before answering", tc.name, sent>>20)
		}
	}
}

// loginStatuses sends n wrong passwords at once to the JSON login, each
// from the local address from(i), and counts the answers by status.
func loginStatuses(t *testing.T, base string, n int, from func(i int) string) map[int]int {
	t.Helper()
	var mu sync.Mutex
	got := map[int]int{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			local, _ := net.ResolveTCPAddr("tcp", from(i)+":0")
			c := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: local}).DialContext}}
			<-start
			resp, err := c.Post(base+"/api/v1/auth/login", "application/json", strings.NewReader(`{"password": "not the password at all"}`))
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			mu.Lock()
			got[resp.StatusCode]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	return got
}

// TestLoginBackoffConcurrent (finding 4): 120 wrong passwords at once
// from one address get 5 checks, not 120; wrong passwords from many
// addresses are limited in all; the right password still logs in from a
// fresh address after the per-address lockout, and over the socket all
// along.
func TestLoginBackoffConcurrent(t *testing.T) {
	d := startDashboard(t, nil)
	got := loginStatuses(t, d.base, 120, func(int) string { return "127.0.0.1" })
	t.Logf("one address, 120 at once: %v", got)
	if got[http.StatusUnauthorized] > 5 || got[http.StatusTooManyRequests] < 115 {
		t.Errorf("one address, 120 at once: %v; want at most 5 checked (401), the rest 429", got)
	}

	// The right password from another address still gets in.
	local, _ := net.ResolveTCPAddr("tcp", "127.0.0.2:0")
	c := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: local}).DialContext}}
	resp, err := c.Post(d.base+"/api/v1/auth/login", "application/json", strings.NewReader(`{"password": "`+testPassword+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("the right password from another address: %d", resp.StatusCode)
	}

	d = startDashboard(t, nil)
	got = loginStatuses(t, d.base, 100, func(i int) string { return fmt.Sprintf("127.0.1.%d", 10+i) })
	t.Logf("100 addresses, one each: %v", got)
	if got[http.StatusUnauthorized] > 30 || got[http.StatusTooManyRequests] < 70 {
		t.Errorf("100 addresses at once: %v; want at most 30 checked (401), the rest 429", got)
	}
	// The CLI's socket is not limited.
	sock := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(d.cfg.DataDir, "ledge.sock"))
	}}}
	resp, err = sock.Get("http://ledge/api/v1/system")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("the socket during the attack: %d", resp.StatusCode)
	}
}

// TestLoginBackoffPerIPv6Prefix (finding 4, IPv6): one host holds a
// whole /64, so wrong passwords from many addresses of one /64 share one
// count: after 5 the next address of that /64 waits, while another /64
// still logs in. The appliance's own handler serves the requests, each
// with the remote address a connection from that address would have
// (this machine cannot dial from a whole /64 of its own).
func TestLoginBackoffPerIPv6Prefix(t *testing.T) {
	d := startDashboard(t, nil)
	h := d.app.web.Handler()
	login := func(from, password string) int {
		t.Helper()
		req := httptest.NewRequest("POST", "/api/v1/auth/login", strings.NewReader(`{"password": "`+password+`"}`))
		req.Header.Set("Content-Type", "application/json")
		req.RemoteAddr = net.JoinHostPort(from, "40000")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code
	}
	for i := 1; i <= 5; i++ {
		if code := login(fmt.Sprintf("2001:db8:1:2::%x", i), "not the password at all"); code != http.StatusUnauthorized {
			t.Fatalf("wrong password %d from 2001:db8:1:2::/64: %d, want 401", i, code)
		}
	}
	// A sixth address of the same /64, the right password included: it waits.
	for _, from := range []string{"2001:db8:1:2::ffff", "2001:db8:1:2:abcd:ef01:2345:6789"} {
		if code := login(from, testPassword); code != http.StatusTooManyRequests {
			t.Errorf("login from %s after 5 wrong ones from its /64: %d, want 429", from, code)
		}
	}
	// Another /64, and an IPv4 client, are not held back by it.
	if code := login("2001:db8:1:3::1", testPassword); code != http.StatusOK {
		t.Errorf("the right password from another /64: %d, want 200", code)
	}
	if code := login("192.0.2.7", testPassword); code != http.StatusOK {
		t.Errorf("the right password from an IPv4 address: %d, want 200", code)
	}
}

// TestHTTPTimeoutsAndConnectionCap (finding 5): slow bodies are not held:
// of 60 connections trickling a body to /login, at most
// http.maxAnonymousConnections stay open, and none outlives
// http.readTimeout; an API client with a token is served meanwhile; the
// event stream outlives the read and write timeouts.
func TestHTTPTimeoutsAndConnectionCap(t *testing.T) {
	d := startDashboard(t, func(c *Config) {
		c.HTTP.ReadTimeout, c.HTTP.WriteTimeout = 2*time.Second, 2*time.Second
		c.HTTP.MaxAnonymousConnections = 20
	})
	tok, err := web.CreateToken(t.Context(), d.app.DB(), "slow-test")
	if err != nil {
		t.Fatal(err)
	}
	// The event stream, opened first, must outlive both timeouts.
	req, _ := http.NewRequest("GET", d.base+"/api/v1/events/stream", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	stream, err := http.DefaultClient.Do(req)
	if err != nil || stream.StatusCode != 200 {
		t.Fatalf("event stream: %v %v", err, stream)
	}
	defer stream.Body.Close()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stream.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()

	// So must a camera's MJPEG stream and MQTT over WebSocket.
	api := func(method, path, body string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, d.base+"/api/v1"+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if resp := api("POST", "/pipelines", `{"name": "cam", "source": {"url": "testpattern:", "fps": 10}}`); resp.StatusCode != 201 {
		t.Fatalf("create pipeline: %d", resp.StatusCode)
	}
	mjpeg := api("GET", "/pipelines/cam/stream.mjpeg", "")
	defer mjpeg.Body.Close()
	var mjpegBytes atomic.Int64
	var mjpegErr atomic.Value
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := mjpeg.Body.Read(buf)
			mjpegBytes.Add(int64(n))
			if err != nil {
				mjpegErr.Store(err)
				return
			}
		}
	}()
	// The user is made through the Go API: hashing its password takes
	// longer than the test's 2 s write timeout under the race detector on
	// a busy machine (the API answered EOF).
	if _, err := d.app.Hub().AddIdentity(t.Context(), hub.IdentitySpec{Name: "wsuser", Kind: hub.KindUser, Password: "a long enough password"}); err != nil {
		t.Fatalf("create a user identity: %v", err)
	}
	ws := paho.NewClient(paho.NewClientOptions().AddBroker("ws://" + d.app.webAddr() + "/$iothub/websocket").SetClientID("wsuser").
		SetUsername("wsuser").SetPassword("a long enough password").SetAutoReconnect(false).SetKeepAlive(time.Minute))
	if tk := ws.Connect(); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("MQTT over WebSocket: %v", tk.Error())
	}
	defer ws.Disconnect(50)

	var open atomic.Int64
	var conns []net.Conn
	for range 60 {
		c, err := net.Dial("tcp", d.app.webAddr())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		fmt.Fprintf(c, "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 10000\r\n\r\npassword=") // under the body cap
		open.Add(1)
		go func() {
			defer open.Add(-1)
			buf := make([]byte, 1)
			go func() { // the trickle
				for {
					time.Sleep(200 * time.Millisecond)
					if _, err := c.Write([]byte("a")); err != nil {
						return
					}
				}
			}()
			for {
				if _, err := c.Read(buf); err != nil {
					return // closed by the server (after its answer, if any)
				}
			}
		}()
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// The server closes what is over the cap.
	for deadline := time.Now().Add(10 * time.Second); open.Load() > 20; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d slow connections held open, want at most http.maxAnonymousConnections (20)", open.Load())
		}
	}
	req, _ = http.NewRequest("GET", d.base+"/api/v1/system", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("API with a token during the attack: %v %v", err, resp)
	}
	resp.Body.Close()
	start := time.Now()
	waitUntil(t, 5*time.Second, "every slow connection closed after http.readTimeout", func() bool { return open.Load() == 0 })
	t.Logf("the last slow connections were closed %s after the check", time.Since(start).Round(10*time.Millisecond))

	// The MJPEG stream still sends frames, the WebSocket still answers.
	before := mjpegBytes.Load()
	waitUntil(t, 5*time.Second, "MJPEG frames after the timeouts", func() bool { return mjpegBytes.Load() > before || mjpegErr.Load() != nil })
	if err := mjpegErr.Load(); err != nil {
		t.Fatalf("the MJPEG stream was cut by a timeout: %v", err)
	}
	if tk := ws.Subscribe("probe/#", 0, nil); !tk.WaitTimeout(5*time.Second) || tk.Error() != nil || !ws.IsConnectionOpen() {
		t.Fatalf("MQTT over WebSocket after the timeouts: %v", tk.Error())
	}
	d.app.events.Publish(web.Event{Type: "probe", Time: time.Now(), Data: "after the timeouts"})
	deadline := time.After(5 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("the event stream was cut by a timeout")
			}
			if strings.Contains(l, "after the timeouts") {
				return
			}
		case <-deadline:
			t.Fatal("no event on the stream after the timeouts")
		}
	}
}

// noRedirect is a client that shows redirects instead of following them.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// TestLoginRedirectStaysHere (finding 6): after logging in, the login
// form sends the browser only to a path of this appliance.
func TestLoginRedirectStaysHere(t *testing.T) {
	d := startDashboard(t, nil)
	for _, tc := range []struct{ next, want string }{
		{`/\evil.com`, "/"},
		{`//evil.com`, "/"},
		{`/\/evil.com`, "/"},
		{"/\t/evil.com", "/"},
		{"https://evil.com/", "/"},
		{"javascript:alert(1)", "/"},
		{"/%5Cevil.com", "/%5Cevil.com"}, // an escaped backslash stays a path here
		{"/deployments?x=1#h", "/deployments?x=1#h"},
		{"", "/"},
	} {
		form := url.Values{"password": {testPassword}, "next": {tc.next}}
		resp, err := noRedirect.PostForm(d.base+"/login", form)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || loc != tc.want {
			t.Errorf("next=%q: %d to %q, want %q", tc.next, resp.StatusCode, loc, tc.want)
		}
	}
}

// TestSecurityHeaders (finding 7): every answer says nosniff and a
// referrer policy; HTTPS answers carry HSTS; the login page has the CSP;
// HEAD answers like GET; "Bearer" is case-insensitive.
func TestSecurityHeaders(t *testing.T) {
	d := startDashboard(t, nil)
	tok, err := web.CreateToken(t.Context(), d.app.DB(), "hdr-test")
	if err != nil {
		t.Fatal(err)
	}
	check := func(c *http.Client, method, url string, hdr map[string]string, wantStatus int, want map[string]string) {
		t.Helper()
		req, _ := http.NewRequest(method, url, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != wantStatus {
			t.Errorf("%s %s: %d, want %d (%s)", method, url, resp.StatusCode, wantStatus, body)
		}
		for k, v := range want {
			if got := resp.Header.Get(k); v == "" && got != "" || v != "" && !strings.Contains(got, v) {
				t.Errorf("%s %s: %s: %q, want %q", method, url, k, got, v)
			}
		}
		if method == "HEAD" && len(body) != 0 {
			t.Errorf("HEAD %s sent a body", url)
		}
	}
	base := map[string]string{"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "Strict-Transport-Security": ""}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	check(noRedirect, "GET", d.base+"/login", nil, 200, with(map[string]string{"Content-Security-Policy": "default-src 'self'", "X-Frame-Options": "DENY"}))
	check(noRedirect, "HEAD", d.base+"/login", nil, 200, with(map[string]string{"Content-Type": "text/html", "Content-Security-Policy": "default-src 'self'"}))
	check(noRedirect, "GET", d.base+"/healthz", nil, 200, base)
	check(noRedirect, "HEAD", d.base+"/healthz", nil, 200, with(map[string]string{"Content-Type": "application/json"}))
	check(noRedirect, "HEAD", d.base+"/deployments", nil, http.StatusSeeOther, base)
	check(noRedirect, "GET", d.base+"/static/app.css", nil, 200, base)
	check(noRedirect, "GET", d.base+"/api/v1/system", nil, 401, base)
	for _, scheme := range []string{"Bearer", "bearer", "BEARER"} {
		check(noRedirect, "GET", d.base+"/api/v1/system", map[string]string{"Authorization": scheme + " " + tok}, 200, base)
	}
	check(noRedirect, "HEAD", d.base+"/api/v1/system", map[string]string{"Authorization": "Bearer " + tok}, 200, base)

	ca, err := os.ReadFile(filepath.Join(d.cfg.DataDir, "hub", "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509Pool(t, ca)
	_, port, _ := net.SplitHostPort(d.app.web.TLSAddr().String())
	tc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	hsts := with(map[string]string{"Strict-Transport-Security": "max-age="})
	check(tc, "GET", "https://localhost:"+port+"/login", nil, 200, hsts)
	check(tc, "GET", "https://localhost:"+port+"/healthz", nil, 200, hsts)
}

func x509Pool(t *testing.T, pem []byte) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(pem) {
		t.Fatal("no certificate in the CA file")
	}
	return p
}
