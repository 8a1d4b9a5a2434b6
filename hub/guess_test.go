package hub

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// connectFrom connects a plain MQTT user from a given loopback address
// (127.x.y.z: Linux takes any of them) and reports whether the hub let it
// in.
func (h *testHub) connectFrom(t *testing.T, from, clientID, user, pass string) error {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(fmt.Sprintf("tcp://127.0.0.1:%d", h.Ports().MQTT)).
		SetClientID(clientID).SetUsername(user).SetPassword(pass).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(60 * time.Second).
		SetDialer(&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 10 * time.Second})
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(90 * time.Second) {
		return fmt.Errorf("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return err
	}
	c.Disconnect(50)
	return nil
}

// TestMQTTPasswordGuessingBounded (third audit): a plain MQTT user's
// password is checked with bcrypt, on every port of the hub, by anyone
// who can connect. Without a bound, one host guessed about 30 passwords
// a second (2.6 million a day) and kept both cores of the appliance busy
// doing it. Now wrong passwords from one address for one user are
// refused after guessFree in a row for a while (30 s, doubling, at most
// 5 min), without checking them; from many addresses, guessGlobalBurst at
// once in all and then one every 3 s. The right password from another
// address, and devices with SAS tokens from the guessing address, still
// connect. (The test lowers the two counts to 3 and 8: each check is a
// bcrypt, most of a second under the race detector on a busy machine;
// TestGuessLimiterBounded checks the real ones.)
func TestMQTTPasswordGuessingBounded(t *testing.T) {
	h := startHub(t, nil, false)
	h.guesses.setLimits(3, 8)
	h.addIdentity(t, IdentitySpec{Name: "plc", Kind: KindUser, Password: "the right one"})
	dev := h.addIdentity(t, IdentitySpec{Name: "cam1"})

	// One host, 40 wrong passwords at once, byte for byte as
	// mosquitto_pub sends them.
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			out, err := exec.Command("mosquitto_pub", "-h", "127.0.0.1", "-p", fmt.Sprint(h.Ports().MQTT),
				"-i", fmt.Sprintf("guess-%d", i), "-u", "plc", "-P", fmt.Sprintf("guess %d", i), "-t", "plant/x", "-m", "1").CombinedOutput()
			if err == nil {
				t.Errorf("a wrong password was let in: %s", out)
			}
		})
	}
	wg.Wait()
	if err := h.connectFrom(t, "127.0.0.1", "plc-1", "plc", "the right one"); err == nil {
		t.Errorf("after 40 wrong passwords from 127.0.0.1, the password of plc is still checked from there: guessing is unbounded")
	}
	if got := h.guesses.checked.Load(); got > 3 {
		t.Errorf("%d of 40 wrong passwords from one address were checked, want at most 3", got)
	}
	// The right password from elsewhere, and a SAS device from the same
	// address, are not locked out.
	if err := h.connectFrom(t, "127.0.0.2", "plc-2", "plc", "the right one"); err != nil {
		t.Errorf("the right password from another address: %v", err)
	}
	if _, err := h.sasClient(t, "cam1", dev.PrimaryKey, false, nil); err != nil {
		t.Errorf("a SAS device from the guessing address: %v", err)
	}

	// Many addresses, one wrong password each, at once: 8 checked in all
	// (less what the budget refilled meanwhile, one every 3 s).
	waitGuessesSettled(t, h.Hub)
	before := h.guesses.checked.Load()
	start := time.Now()
	for i := range 20 {
		wg.Go(func() {
			if err := h.connectFrom(t, fmt.Sprintf("127.0.3.%d", 10+i), fmt.Sprintf("spray-%d", i), "plc", "nope"); err == nil {
				t.Error("a wrong password was let in")
			}
		})
	}
	wg.Wait()
	refilled := uint64(time.Since(start) / guessGlobalEvery)
	if got := h.guesses.checked.Load() - before; got > 8+refilled {
		t.Errorf("%d of 20 wrong passwords from 20 addresses were checked in %s, want at most 8 and one every 3 s", got, time.Since(start).Round(time.Second))
	}
	// The right password gets in again once the appliance-wide budget
	// refills.
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := h.connectFrom(t, "127.0.4.1", "plc-3", "plc", "the right one")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the right password from a fresh address, 60 s after the spray: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	// Unknown users are counted too (a spray of names does not guess for
	// free). CONNECTs of the spray and of the retries above that their
	// clients gave up on may still wait for their check (on a busy machine
	// under the race detector a check takes seconds): count from when
	// none is left.
	waitGuessesSettled(t, h.Hub)
	before = h.guesses.checked.Load()
	for i := range 6 {
		if err := h.connectFrom(t, "127.0.5.1", fmt.Sprintf("u-%d", i), "nobody", "x"); err == nil {
			t.Errorf("an unknown user was let in")
		}
	}
	if got := h.guesses.checked.Load() - before; got > 3 {
		t.Errorf("%d of 6 passwords of an unknown user from one address were checked, want at most 3", got)
	}
}

// TestGuessLimiterBounded: the lockout doubles from 30 s to at most
// 5 min, the right password clears it, and the appliance-wide budget
// refills one attempt every 3 s.
func TestGuessLimiterBounded(t *testing.T) {
	l := newGuessLimiter()
	now := time.Unix(1e9, 0)
	for range guessFree {
		if w, _ := l.begin("a", now); w != 0 {
			t.Fatalf("a free attempt waits %v", w)
		}
	}
	if w, _ := l.begin("a", now); w != guessFirstLockout {
		t.Fatalf("after %d failures: wait %v, want %v", guessFree, w, guessFirstLockout)
	}
	for i := range 20 {
		now = now.Add(guessMaxLockout)
		l.begin("a", now) // one more failure once allowed
		if w, _ := l.begin("a", now); w > guessMaxLockout {
			t.Fatalf("lockout %d: %v, over the %v bound", i, w, guessMaxLockout)
		}
	}
	now = now.Add(guessMaxLockout)
	l.begin("a", now)
	l.succeeded("a")
	if w, _ := l.begin("a", now); w != 0 {
		t.Fatalf("after the right password: wait %v", w)
	}

	l = newGuessLimiter()
	for i := range guessGlobalBurst {
		if w, _ := l.begin(fmt.Sprint("c", i), now); w != 0 {
			t.Fatalf("attempt %d of the burst waits %v", i, w)
		}
	}
	if w, global := l.begin("new", now); w != guessGlobalEvery || !global {
		t.Fatalf("over the burst: %v %v", w, global)
	}
	now = now.Add(guessGlobalEvery)
	if w, _ := l.begin("new", now); w != 0 {
		t.Fatalf("after %v: wait %v", guessGlobalEvery, w)
	}
}

// TestRefusedConnectsDoNotFloodTheLog (third audit): each refused
// CONNECT was one line in the log, and one unauthenticated host sent
// about 3,800 a second: journald (10,000 lines in 30 s per service by
// default) then drops everything ledge says, the attack's lines and all
// others. Now the first refusal of each address and reason is logged at
// once, the others are counted and said in one line at the end of the
// window, and at most 100 addresses and reasons are logged in a window.
func TestRefusedConnectsDoNotFloodTheLog(t *testing.T) {
	var logs lockedBuffer
	h := startHubLogged(t, testDevice, nil, false, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	h.addIdentity(t, IdentitySpec{Name: "cam1"})

	// One host, 300 CONNECTs with a forged SAS token, 10 at a time.
	bad := "SharedAccessSignature sr=ledge.test%2Fdevices%2Fcam1&sig=Zm9yZ2Vk&se=4102444800"
	sem := make(chan struct{}, 10)
	var wg sync.WaitGroup
	for range 300 {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := h.connectFrom(t, "127.0.0.1", "cam1", "ledge.test/cam1/?api-version=2021-04-12", bad); err == nil {
				t.Error("a forged token was let in")
			}
		})
	}
	wg.Wait()
	// Another host's refusal is still said at once.
	if err := h.connectFrom(t, "127.0.0.2", "cam1", "ledge.test/cam1/?api-version=2021-04-12", bad); err == nil {
		t.Error("a forged token was let in")
	}
	lines := func(remote string) int {
		n := 0
		for l := range strings.Lines(logs.String()) {
			if strings.Contains(l, `msg="mqtt connect refused"`) && strings.Contains(l, "remote="+remote+":") {
				n++
			}
		}
		return n
	}
	if n := lines("127.0.0.1"); n > 1 {
		t.Errorf("300 refused connects from one address made %d lines in the log, want 1 (and one line with the count)", n)
	}
	if n := lines("127.0.0.2"); n != 1 {
		t.Errorf("the refusal of another address: %d lines, want 1", n)
	}
	h.refusals.setWindow(0) // the window (a minute) ends at the next tick
	waitUntil(t, 10*time.Second, "the count of the refusals not logged", func() bool {
		return strings.Contains(logs.String(), `msg="refusals not logged" remote=127.0.0.1 count=`)
	})
	h.refusals.setWindow(time.Minute)

	// What a client chooses is clipped in the log: a CONNECT may carry a
	// client id of 64 KiB, and 100 such lines a minute filled journald.
	long := strings.Repeat("x", 10000)
	h.connectFrom(t, "127.0.0.3", long, "ledge.test/cam1/?api-version=2021-04-12", bad)
	waitUntil(t, 10*time.Second, "the refusal of the long client id", func() bool { return lines("127.0.0.3") == 1 })
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, "remote=127.0.0.3") && len(l) > 1000 {
			t.Errorf("a refusal's line is %d bytes: the client id is not clipped", len(l))
		}
	}

	// Many addresses at once: at most 100 said, the rest counted.
	before := strings.Count(logs.String(), "\n")
	for i := range 150 {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			h.connectFrom(t, fmt.Sprintf("127.0.6.%d", 10+i), "cam1", "ledge.test/cam1/?api-version=2021-04-12", bad)
		})
	}
	wg.Wait()
	if n := strings.Count(logs.String(), "\n") - before; n > 100 {
		t.Errorf("150 addresses made %d lines in the log at once, want at most 100 and the count of the others", n)
	}
	h.refusals.setWindow(0)
	waitUntil(t, 10*time.Second, "the count of the other addresses", func() bool {
		return strings.Contains(logs.String(), `msg="refusals not logged" remote="other addresses"`)
	})
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFailedHandshakesDoNotFloodTheLog (third audit): every failed TLS
// handshake on the hub's WebSocket port was a WARN line: anyone who can
// connect made one a connection, as fast as refused CONNECTs. Now they
// are logged as refused connections are: once per address a minute, the
// others counted.
func TestFailedHandshakesDoNotFloodTheLog(t *testing.T) {
	var logs lockedBuffer
	port := freePort(t)
	h := startHubLogged(t, testDevice, func(c *Config) { c.Listen.WebSocket = fmt.Sprintf("127.0.0.1:%d", port) }, false,
		slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	for range 200 {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("\x16\x03\x01\x00\x05garbage, not a ClientHello"))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		c.Read(make([]byte, 64))
		c.Close()
	}
	if n := strings.Count(logs.String(), "TLS handshake"); n > 1 {
		t.Errorf("200 failed handshakes made %d lines in the log, want 1 (and one with the count)", n)
	}
	h.refusals.setWindow(0) // the window (a minute) ends at the next tick
	waitUntil(t, 10*time.Second, "the count of the failed handshakes", func() bool {
		return strings.Contains(logs.String(), `msg="refusals not logged" remote=127.0.0.1 count=199 reason="TLS handshake failed"`)
	})
}

// TestRefusedMethodCallsDoNotFloodTheLog (third audit): the hub's
// WebSocket port also serves modules' direct method calls
// (POST /twins/...), and each one refused for its token was an INFO line:
// anyone who can connect, knowing a module's name, made one a request.
// Now they are logged as refused connections are.
func TestRefusedMethodCallsDoNotFloodTheLog(t *testing.T) {
	var logs lockedBuffer
	port := freePort(t)
	h := startHubLogged(t, testDevice, func(c *Config) { c.Listen.WebSocket = fmt.Sprintf("127.0.0.1:%d", port) }, false,
		slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	h.addIdentity(t, IdentitySpec{Name: testDevice + "/m1", Kind: KindModule})
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	for range 100 {
		req, _ := http.NewRequest("POST", fmt.Sprintf("https://127.0.0.1:%d/twins/%s/methods", port, testDevice), strings.NewReader(`{"methodName":"x"}`))
		req.Header.Set("x-ms-edge-moduleId", testDevice+"/m1")
		req.Header.Set("Authorization", "SharedAccessSignature sr=ledge.test%2Fdevices%2Fedge%2Fmodules%2Fm1&sig=Zm9yZ2Vk&se=4102444800")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("a forged token: %d", resp.StatusCode)
		}
	}
	if n := strings.Count(logs.String(), "direct method refused"); n > 1 {
		t.Errorf("100 refused method calls made %d lines in the log, want 1 (and one with the count)", n)
	}
	h.refusals.setWindow(0) // the window (a minute) ends at the next tick
	waitUntil(t, 10*time.Second, "the count of the refused calls", func() bool {
		return strings.Contains(logs.String(), `msg="refusals not logged" remote=127.0.0.1 count=99 reason="direct method refused:`)
	})
}

// waitGuessesSettled waits until no MQTT password attempt waits for or
// holds its check.
func waitGuessesSettled(t *testing.T, h *Hub) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); h.guesses.pending.Load() > 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d password attempts still wait for their check", h.guesses.pending.Load())
		}
	}
}
