package hub

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"ledge/hub/azure"
	"ledge/internal/fault"
)

// The parent as a full parent (azure upstream mode), as IoT Hub is for
// an Azure gateway. Besides the device's own connection (telemetry,
// upstream.go), the hub opens one connection to the parent per identity
// it acts for, each speaking the IoT Hub device API:
//
//   - <device>/$edgeAgent, <device>/$edgeHub, <device>/$ledge: the twins
//     the agent takes deployments from and reports to (WatchParentTwins,
//     ReportParentTwin);
//   - each device or module connected here (<device>/<module> for this
//     device's modules, <leaf> for leaf devices): the parent's direct
//     methods and C2D messages for it are relayed to it, its desired
//     properties are synced down (kept here: offline, a client reads the
//     last known, as with edgeHub) and its reported patches up.
//
// They authenticate with this device's key: module connections as the
// device's modules, leaf connections "on behalf of" (skn=<device>), which
// a parent accepts for the devices whose parent it says this device is
// (sasKeys). A connection for a client that left is closed after
// relayIdle.

// relayIdle is how long a relay stays open after its local client left.
const relayIdle = time.Minute

// twinSettle is how long the parent's twins stay unchanged before the
// agent is told (a deployment written twin by twin comes as one).
const twinSettle = 500 * time.Millisecond

// twinRequestTimeout is how long a relay waits for the parent to answer
// a twin request.
const twinRequestTimeout = 10 * time.Second

// RelayStatus is one connection to the parent on behalf of an identity.
type RelayStatus struct {
	Identity  string `json:"identity"`
	State     string `json:"state"` // connecting, connected, refused
	LastError string `json:"lastError,omitempty"`
}

type parentLink struct {
	h      *Hub
	cfg    UpstreamConfig
	tlsCfg *tls.Config

	mu    sync.Mutex // guards the fields below
	conns map[string]*parentConn
	ctx   context.Context // set by run; nil before
	watch *twinWatch
	// hook, set by tests, sees what a relay does with the desired
	// properties: "read" (a full read answered, before it is taken; it
	// may hold it there), "read taken" and "patch taken", with the
	// remote identity and the parent's $version.
	hook func(event, remote string, version int64)
	// twinTimeout bounds the wait for the parent's answer to a twin
	// request (twinRequestTimeout; tests shorten it).
	twinTimeout time.Duration
}

// event tells the test hook, if any.
func (l *parentLink) event(what, remote string, version int64) {
	l.mu.Lock()
	h := l.hook
	l.mu.Unlock()
	if h != nil {
		h(what, remote, version)
	}
}

type twinWatch struct {
	modules []string
	handler func(map[string]json.RawMessage)
	timer   *time.Timer
}

// parentConn is one connection to the parent for one identity.
type parentConn struct {
	l      *parentLink
	local  string // the identity here ("" for a system twin)
	remote string // the identity at the parent: <device>/<module> or <leaf>
	device string
	module string
	system bool // a twin the agent reads ($edgeAgent...), not a client here

	cli     paho.Client
	stop    chan struct{}
	stopped atomic.Bool
	rid     atomic.Uint64

	// take is held while desired properties from the parent (a full read
	// or a patch) are checked against what was taken and taken: one taken
	// late never undoes a newer one.
	take sync.Mutex

	mu      sync.Mutex // guards the fields below
	waits   map[string]chan twinReply
	desired map[string]any // system twins: the desired properties as last taken
	gen     uint64         // counts connections: a read for an older one is dropped
	version int64          // the parent's $version of the desired properties taken on this connection
	fetched bool           // desired read in full since the last connection
	// readGen is the connection a read loop runs for (readUntilTaken; 0:
	// none), readAgain asks it for one more read.
	readGen   uint64
	readAgain bool
	// reportGen is the connection a loop sending the reported properties
	// again runs for (resyncReported; 0: none), reportAgain asks it for
	// one more upload.
	reportGen   uint64
	reportAgain bool
	state       string
	lastErr     string
	leftAt      time.Time // when the local client was last seen gone
}

type twinReply struct {
	status int
	body   []byte
}

func newParentLink(h *Hub, cfg UpstreamConfig, tlsCfg *tls.Config) *parentLink {
	return &parentLink{h: h, cfg: cfg, tlsCfg: tlsCfg, conns: map[string]*parentConn{}, twinTimeout: twinRequestTimeout}
}

// run keeps a relay open for every device and module connected here
// until ctx ends, then closes every connection.
func (l *parentLink) run(ctx context.Context) {
	l.mu.Lock()
	l.ctx = ctx
	for _, c := range l.conns {
		go c.connect()
	}
	l.mu.Unlock()
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		l.scan()
		select {
		case <-ctx.Done():
			l.mu.Lock()
			conns := l.conns
			l.conns = map[string]*parentConn{}
			l.mu.Unlock()
			for _, c := range conns {
				c.close()
			}
			return
		case <-l.h.connChanged():
		case <-t.C:
		}
	}
}

// scan opens relays for the clients connected here and closes those
// whose client has been gone for relayIdle.
func (l *parentLink) scan() {
	here := map[string]*session{}
	l.h.byID.Range(func(_, v any) bool {
		s := v.(*session)
		switch {
		case s.anonymous || s.cl == nil || s.cl.Closed():
		case s.kind == KindDevice && !strings.EqualFold(s.device, l.cfg.DeviceID),
			// Only this device's modules are its modules at the parent.
			s.kind == KindModule && strings.EqualFold(s.device, l.h.deviceID):
			here[strings.ToLower(s.name)] = s
		}
		return true
	})
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for key, s := range here {
		if c := l.conns[key]; c != nil {
			c.mu.Lock()
			c.leftAt = time.Time{}
			c.mu.Unlock()
			continue
		}
		c := l.newConn(s.name, s.device, s.module, false)
		l.conns[key] = c
		if l.ctx != nil {
			go c.connect()
		}
	}
	for key, c := range l.conns {
		if c.system || here[key] != nil {
			continue
		}
		c.mu.Lock()
		if c.leftAt.IsZero() {
			c.leftAt = now
		}
		idle := now.Sub(c.leftAt) > relayIdle
		c.mu.Unlock()
		if idle {
			delete(l.conns, key)
			go c.close()
		}
	}
}

// newConn makes the connection for identity local (device, module as
// here). Called with l.mu held.
func (l *parentLink) newConn(local, device, module string, system bool) *parentConn {
	c := &parentConn{l: l, local: local, device: device, module: module, system: system, stop: make(chan struct{}),
		waits: map[string]chan twinReply{}, state: "connecting"}
	if module != "" {
		// This device's modules are the upstream identity's modules there.
		c.device = l.cfg.DeviceID
		c.remote = c.device + "/" + module
	} else {
		c.remote = device
	}
	host := l.cfg.Host
	o := paho.NewClientOptions().AddBroker(l.cfg.URL).SetClientID(c.remote).
		SetCleanSession(true).SetAutoReconnect(true).SetConnectRetry(false).
		SetMaxReconnectInterval(maxBackoff).SetConnectTimeout(30 * time.Second).
		SetWriteTimeout(upstreamWriteTimeout).SetKeepAlive(l.cfg.KeepAlive).SetOrderMatters(false)
	if l.tlsCfg != nil {
		o.SetTLSConfig(l.tlsCfg)
	}
	o.SetCredentialsProvider(func() (string, string) {
		tok, _ := azure.BuildToken(azure.Resource(host, c.device, c.module), l.cfg.DeviceKey, time.Now().Add(time.Hour))
		if module == "" && !strings.EqualFold(device, l.cfg.DeviceID) {
			tok += "&skn=" + url.QueryEscape(l.cfg.DeviceID) // on behalf of: signed with this device's key
		}
		return host + "/" + c.remote + "/?api-version=" + azureAPIVersion, tok
	})
	o.SetOnConnectHandler(func(cli paho.Client) { go c.onConnect(cli) })
	o.SetConnectionLostHandler(func(cli paho.Client, err error) {
		c.mu.Lock()
		// paho runs this in its own goroutine, beside the reconnection:
		// once that is up, this connection's onConnect owns the state.
		if !cli.IsConnectionOpen() {
			c.state, c.lastErr, c.fetched = "connecting", err.Error(), false
		}
		c.mu.Unlock()
	})
	c.cli = paho.NewClient(o)
	return c
}

// connect connects, retrying with back-off until it succeeds or the
// connection is closed; a refusal is logged once.
func (c *parentConn) connect() {
	wait := time.Second
	told := false
	for !c.stopped.Load() {
		tok := c.cli.Connect()
		tok.Wait()
		if tok.Error() == nil {
			if told {
				c.l.h.log.Info("parent relay connected", "identity", c.remote)
			}
			return
		}
		c.mu.Lock()
		c.state, c.lastErr = "refused", tok.Error().Error()
		c.mu.Unlock()
		if !told {
			hint := ""
			if !c.system && c.module == "" {
				hint = fmt.Sprintf(" (on the parent: ledge identity add %s --parent %s)", c.remote, c.l.cfg.DeviceID)
			}
			c.l.h.log.Warn("the parent refuses a connection on behalf of "+c.remote+hint, "err", tok.Error())
			told = true
		}
		select {
		case <-c.stop:
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, maxBackoff)
	}
}

func (c *parentConn) close() {
	if c.stopped.CompareAndSwap(false, true) {
		close(c.stop)
		c.cli.Disconnect(250)
	}
}

func (c *parentConn) onConnect(cli paho.Client) {
	c.mu.Lock()
	c.gen++
	gen := c.gen
	c.state, c.lastErr, c.fetched, c.version = "connected", "", false, 0
	c.mu.Unlock()
	subs := map[string]byte{
		"$iothub/twin/res/#":                      0,
		"$iothub/twin/PATCH/properties/desired/#": 0,
		"$iothub/methods/POST/#":                  0,
	}
	if c.module == "" && !c.system {
		subs["devices/"+c.remote+"/messages/devicebound/#"] = 1
	}
	tok := cli.SubscribeMultiple(subs, c.onMessage)
	if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		c.l.h.log.Warn("parent relay: subscribe", "identity", c.remote, "err", tok.Error())
		return
	}
	// Desired properties now, in full: what changed while away.
	if !c.readUntilTaken(gen) || c.system {
		return
	}
	// What the client reported while the parent was away goes up.
	if err := c.uploadReported(); err != nil {
		c.resyncReported(gen, err)
	}
}

// reportErrPrefix starts the relay's last error while the parent has not
// taken the reported properties.
const reportErrPrefix = "report to the parent: "

// patchReported sends a reported patch to the parent; it fails when the
// parent does not answer or refuses it.
func (c *parentConn) patchReported(body []byte) error {
	r, err := c.request("$iothub/twin/PATCH/properties/reported/?$rid=", body)
	switch {
	case err != nil:
		return err
	case r.status/100 != 2:
		return fmt.Errorf("the parent answered %d: %s", r.status, bytes.TrimSpace(r.body))
	}
	return nil
}

// uploadReported sends the client's whole reported state here to the
// parent.
func (c *parentConn) uploadReported() error {
	t, err := c.l.h.twins.load(context.Background(), c.local)
	if err != nil || len(t.Reported) == 0 {
		return err
	}
	body, _ := json.Marshal(t.Reported)
	return c.patchReported(body)
}

// resyncReported sends the client's whole reported state up again, with
// back-off (1 s doubling to maxBackoff), until the parent takes it, while
// connection gen lasts: a reported patch the parent lost or refused would
// otherwise be missing there until the next connection (the client had
// its 204 here). Until then the relay's status says why. One loop runs per
// connection; a patch that fails meanwhile asks it for one more upload.
// (A key deleted here by a patch the parent lost stays there: a whole
// state removes nothing.)
func (c *parentConn) resyncReported(gen uint64, err error) {
	c.mu.Lock()
	if c.reportGen == gen {
		c.reportAgain = true
		c.mu.Unlock()
		return
	}
	c.reportGen = gen
	c.mu.Unlock()
	c.l.h.log.Warn("parent relay: the parent did not take reported properties, sending them again with back-off", "identity", c.remote, "err", err)
	wait := minBackoff
	for {
		c.mu.Lock()
		if c.gen != gen || c.stopped.Load() {
			if c.reportGen == gen {
				c.reportGen = 0
			}
			c.mu.Unlock()
			return
		}
		if err == nil && !c.reportAgain {
			c.reportGen = 0
			if strings.HasPrefix(c.lastErr, reportErrPrefix) {
				c.lastErr = ""
			}
			c.mu.Unlock()
			c.l.h.log.Info("parent relay: reported properties taken", "identity", c.remote)
			return
		}
		if err != nil {
			c.lastErr = fmt.Sprintf("%s%v (again in %s)", reportErrPrefix, err, wait)
		} else {
			wait = 0 // a patch failed while the last upload ran: at once
		}
		c.reportAgain = false
		c.mu.Unlock()
		select {
		case <-c.stop:
		case <-time.After(wait):
		}
		wait = min(max(2*wait, minBackoff), maxBackoff)
		err = c.uploadReported()
	}
}

// readUntilTaken reads the desired properties at the parent in full
// (readDesired) until a read succeeds, again and again with back-off
// (1 s doubling to maxBackoff) while connection gen lasts: a parent that
// does not answer, or answers an error, while the connection stays up
// would otherwise leave the twin unread until the next connection (the
// agent takes no deployment before every twin it follows is read). Until
// then the relay's status says why. One loop runs per connection: a read
// asked meanwhile (a patch that does not follow) is done by it once its
// read is taken. It returns false when the connection ended first.
func (c *parentConn) readUntilTaken(gen uint64) bool {
	c.mu.Lock()
	if c.readGen == gen {
		c.readAgain = true
		c.mu.Unlock()
		return true
	}
	c.readGen, c.readAgain = gen, false
	c.mu.Unlock()
	wait, failed := minBackoff, false
	for {
		err := c.readDesired(gen)
		c.mu.Lock()
		switch {
		case c.gen != gen || c.stopped.Load():
			if c.readGen == gen {
				c.readGen = 0
			}
			c.mu.Unlock()
			return false
		case err == nil && c.readAgain:
			c.readAgain, wait = false, minBackoff
			c.mu.Unlock()
			continue
		case err == nil:
			c.readGen = 0
			if strings.HasPrefix(c.lastErr, readErrPrefix) {
				c.lastErr = ""
			}
			c.mu.Unlock()
			if failed {
				c.l.h.log.Info("parent relay: twin read", "identity", c.remote)
			}
			return true
		}
		c.lastErr = fmt.Sprintf("%s%v (again in %s)", readErrPrefix, err, wait)
		c.mu.Unlock()
		if !failed {
			c.l.h.log.Warn("parent relay: cannot read the twin, trying again with back-off", "identity", c.remote, "err", err)
			failed = true
		}
		select {
		case <-c.stop:
		case <-time.After(wait):
		}
		wait = min(2*wait, maxBackoff)
	}
}

// readErrPrefix starts the relay's last error while its twin is unread.
const readErrPrefix = "read the twin: "

// readDesired reads the desired properties at the parent in full and
// takes them, unless newer ones were taken meanwhile on connection gen (a
// patch the parent sent after it answered). It fails when the parent did
// not answer, answered an error, or sent what is not a twin.
func (c *parentConn) readDesired(gen uint64) error {
	r, err := c.request("$iothub/twin/GET/?$rid=", nil)
	switch {
	case err != nil:
		return err
	case r.status != 200:
		return fmt.Errorf("the parent answered %d: %s", r.status, bytes.TrimSpace(r.body))
	}
	var tw struct {
		Desired map[string]any `json:"desired"`
	}
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.UseNumber()
	if err := dec.Decode(&tw); err != nil {
		return fmt.Errorf("the parent's twin: %w", err)
	}
	v := versionOf(tw.Desired)
	c.l.event("read", c.remote, v)
	defer c.l.event("read taken", c.remote, v)
	c.take.Lock()
	defer c.take.Unlock()
	c.mu.Lock()
	if c.gen != gen || (c.fetched && v <= c.version) {
		c.mu.Unlock()
		return nil
	}
	c.fetched, c.version = true, v
	if c.system {
		c.desired = tw.Desired
	}
	c.mu.Unlock()
	if c.system {
		c.l.desiredChanged()
	} else {
		c.syncDesired(tw.Desired)
	}
	return nil
}

// syncDesired makes the desired properties here those of the parent.
func (c *parentConn) syncDesired(desired map[string]any) {
	ctx := context.Background()
	delete(desired, "$version")
	delete(desired, "$metadata")
	cur, err := c.l.h.GetTwin(ctx, c.local)
	if err != nil {
		return
	}
	a, _ := json.Marshal(cur.Desired)
	b, _ := json.Marshal(desired)
	if bytes.Equal(a, b) {
		return
	}
	if _, err := c.l.h.SetDesired(ctx, c.local, desired); err != nil {
		c.l.h.log.Warn("parent relay: desired properties", "identity", c.local, "err", err)
	}
}

// request publishes a twin request on prefix+rid and waits for its
// answer.
func (c *parentConn) request(prefix string, body []byte) (twinReply, error) {
	rid := strconv.FormatUint(c.rid.Add(1), 10)
	ch := make(chan twinReply, 1)
	c.mu.Lock()
	c.waits[rid] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waits, rid)
		c.mu.Unlock()
	}()
	if !c.cli.IsConnectionOpen() {
		return twinReply{}, fault.New(fault.Unavailable, "the parent is not connected")
	}
	tok := c.cli.Publish(prefix+rid, 0, false, body)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return twinReply{}, fault.New(fault.Unavailable, "to the parent: %v", tok.Error())
	}
	c.l.mu.Lock()
	timeout := c.l.twinTimeout
	c.l.mu.Unlock()
	select {
	case r := <-ch:
		return r, nil
	case <-time.After(timeout):
		return twinReply{}, fault.New(fault.Timeout, "the parent did not answer a twin request within %s", timeout)
	case <-c.stop:
		return twinReply{}, fault.New(fault.Unavailable, "closed")
	}
}

func (c *parentConn) onMessage(_ paho.Client, m paho.Message) {
	topic := m.Topic()
	path, query, _ := strings.Cut(topic, "?")
	q, _, _ := azure.ParseBag(query)
	switch {
	case strings.HasPrefix(path, "$iothub/twin/res/"):
		status, _ := strconv.Atoi(strings.TrimSuffix(path[len("$iothub/twin/res/"):], "/"))
		c.mu.Lock()
		ch := c.waits[q["$rid"]]
		c.mu.Unlock()
		if ch != nil {
			ch <- twinReply{status: status, body: bytes.Clone(m.Payload())}
		}
	case strings.HasPrefix(path, "$iothub/twin/PATCH/properties/desired"):
		c.onDesiredPatch(m.Payload())
	case strings.HasPrefix(path, "$iothub/methods/POST/"):
		name := strings.TrimSuffix(path[len("$iothub/methods/POST/"):], "/")
		c.onMethod(name, q["$rid"], bytes.Clone(m.Payload()))
	case strings.HasPrefix(path, "devices/"):
		c.onC2D(topic, bytes.Clone(m.Payload()))
	}
}

// onDesiredPatch takes a desired patch from the parent when it is the
// next $version after what was taken; one already taken is dropped; one
// that cannot be put on what is here (the full read since the connection
// is not taken yet, and may be older; or a patch in between is missing:
// paho hands each message to its own goroutine) makes the relay read the
// twin again in full.
func (c *parentConn) onDesiredPatch(body []byte) {
	var p map[string]any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if dec.Decode(&p) != nil {
		return
	}
	v := versionOf(p)
	defer c.l.event("patch taken", c.remote, v)
	c.take.Lock()
	defer c.take.Unlock()
	c.mu.Lock()
	gen := c.gen
	switch {
	case !c.fetched || v == 0 || v > c.version+1:
		c.mu.Unlock()
		go c.readUntilTaken(gen)
		return
	case v <= c.version:
		c.mu.Unlock()
		return
	}
	c.version = v
	if c.system {
		if c.desired == nil {
			c.desired = map[string]any{}
		}
		merge(c.desired, p)
		c.desired["$version"] = p["$version"]
	}
	c.mu.Unlock()
	if c.system {
		c.l.desiredChanged()
		return
	}
	if _, err := c.l.h.PatchDesired(context.Background(), c.local, body); err != nil {
		c.l.h.log.Warn("parent relay: desired patch", "identity", c.local, "err", err)
	}
}

// versionOf is the $version of desired properties (0 without one).
func versionOf(d map[string]any) int64 {
	switch v := d["$version"].(type) {
	case json.Number:
		n, _ := v.Int64()
		return n
	case float64:
		return int64(v)
	}
	return 0
}

// onMethod relays a direct method from the parent to the client here and
// its answer back: 404 when the client is not connected, 504 when it does
// not answer in time (hub.methodTimeout), as edgeHub answers.
func (c *parentConn) onMethod(name, rid string, payload []byte) {
	status, out := 200, []byte(nil)
	switch {
	case c.system && c.module == "$edgeAgent" && name == "ping":
		out = []byte("{}")
	case c.system:
		status, out = 404, []byte(`{"message":"ledge's `+c.module+` answers no method but ping"}`)
	default:
		r, err := c.l.h.InvokeMethod(context.Background(), c.local, name, payload, 0)
		switch {
		case err == nil:
			status, out = r.Status, r.Payload
		case fault.Is(err, fault.NotFound):
			status = 404
		case fault.Is(err, fault.Timeout):
			status = 504
		default:
			status = 500
		}
		if err != nil {
			out, _ = json.Marshal(map[string]string{"message": err.Error()})
		}
	}
	c.cli.Publish("$iothub/methods/res/"+strconv.Itoa(status)+"/?$rid="+url.QueryEscape(rid), 0, false, out)
}

// onC2D delivers a cloud-to-device message to the device here; the
// parent gets its PUBACK once the device acknowledged it (or gave up).
func (c *parentConn) onC2D(topic string, body []byte) {
	prefix := "devices/" + c.remote + "/messages/devicebound/"
	bag := strings.TrimSuffix(strings.TrimPrefix(topic, prefix), "/")
	app, sys, _ := azure.ParseBag(bag)
	props := map[string]string{}
	for k, v := range app {
		props[k] = v
	}
	for k, v := range sys {
		props[k] = v
	}
	if err := c.l.h.SendC2D(context.Background(), c.local, body, props); err != nil {
		c.l.h.log.Info("parent relay: cloud-to-device message not delivered", "device", c.local, "err", err)
	}
}

// reportUp sends a reported patch of a client here to the parent, when
// its relay is connected (else the whole reported state goes up when it
// connects).
func (l *parentLink) reportUp(name string, patch []byte) {
	l.mu.Lock()
	c := l.conns[strings.ToLower(name)]
	l.mu.Unlock()
	if c == nil || c.system || !c.cli.IsConnectionOpen() {
		return
	}
	c.mu.Lock()
	gen := c.gen
	c.mu.Unlock()
	go func() {
		if err := c.patchReported(patch); err != nil {
			c.resyncReported(gen, err)
		}
	}()
}

// desiredChanged tells the agent, once the system twins are read and
// settle.
func (l *parentLink) desiredChanged() {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.watch
	if w == nil {
		return
	}
	if w.timer != nil {
		w.timer.Stop()
	}
	w.timer = time.AfterFunc(twinSettle, l.tellWatcher)
}

func (l *parentLink) tellWatcher() {
	l.mu.Lock()
	w := l.watch
	if w == nil {
		l.mu.Unlock()
		return
	}
	out := map[string]json.RawMessage{}
	for _, m := range w.modules {
		c := l.conns[systemKey(m)]
		if c == nil {
			l.mu.Unlock()
			return
		}
		c.mu.Lock()
		fetched, d := c.fetched, c.desired
		var raw json.RawMessage
		if d != nil {
			raw, _ = json.Marshal(d)
		}
		c.mu.Unlock()
		if !fetched {
			l.mu.Unlock()
			return // not every twin is read yet since the last connection
		}
		out[m] = raw
	}
	h := w.handler
	l.mu.Unlock()
	h(out)
}

func systemKey(module string) string { return "\x00system/" + module }

// WatchParentTwins follows the desired properties of this device's module
// twins named in modules (e.g. $edgeAgent, $edgeHub, $ledge) at the
// parent: handler gets all of them once every one was read after a
// connection, and again when one changes (after they settle). It fails
// without a parent (hub.upstream in azure mode).
func (h *Hub) WatchParentTwins(modules []string, handler func(map[string]json.RawMessage)) (func(), error) {
	l := h.parent
	if l == nil {
		return nil, fault.New(fault.Unavailable, "no parent: hub.upstream.mode is not azure (or hub.upstream.relay is off)")
	}
	l.mu.Lock()
	if l.watch != nil {
		l.mu.Unlock()
		return nil, fault.New(fault.Conflict, "the parent's twins are watched already")
	}
	l.watch = &twinWatch{modules: modules, handler: handler}
	var conns []*parentConn
	for _, m := range modules {
		c := l.newConn("", l.cfg.DeviceID, m, true)
		l.conns[systemKey(m)] = c
		conns = append(conns, c)
	}
	running := l.ctx != nil
	l.mu.Unlock()
	if running {
		for _, c := range conns {
			go c.connect()
		}
	}
	return func() {
		l.mu.Lock()
		if w := l.watch; w != nil && w.timer != nil {
			w.timer.Stop()
		}
		l.watch = nil
		for _, m := range modules {
			delete(l.conns, systemKey(m))
		}
		l.mu.Unlock()
		for _, c := range conns {
			c.close()
		}
	}, nil
}

// ReportParentTwin sends a reported-properties patch of this device's
// module twin module to the parent (WatchParentTwins must follow it). It
// fails with fault.Unavailable while the parent is not connected.
func (h *Hub) ReportParentTwin(ctx context.Context, module string, patch json.RawMessage) error {
	l := h.parent
	if l == nil {
		return fault.New(fault.Unavailable, "no parent")
	}
	l.mu.Lock()
	c := l.conns[systemKey(module)]
	l.mu.Unlock()
	if c == nil {
		return fault.New(fault.Unavailable, "twin %s of the parent is not followed", module)
	}
	r, err := c.request("$iothub/twin/PATCH/properties/reported/?$rid=", patch)
	if err != nil {
		return err
	}
	if r.status/100 != 2 {
		return fmt.Errorf("the parent answered %d: %s", r.status, r.body)
	}
	return nil
}

// relays lists the connections to the parent, for the status.
func (l *parentLink) relays() []RelayStatus {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]RelayStatus, 0, len(l.conns))
	for _, c := range l.conns {
		c.mu.Lock()
		out = append(out, RelayStatus{Identity: c.remote, State: c.state, LastError: c.lastErr})
		c.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Identity < out[j].Identity })
	return out
}
