package hub

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// netListener is a mochi listener over a socket the hub bound itself in
// New, so a busy port fails before anything runs.
type netListener struct {
	id      string
	l       net.Listener
	tls     *tls.Config
	pending *pendingConns
	timeout time.Duration // TLS handshake and CONNECT
	log     *slog.Logger
	once    sync.Once
}

func (l *netListener) Init(*slog.Logger) error { return nil }
func (l *netListener) ID() string              { return l.id }
func (l *netListener) Address() string         { return l.l.Addr().String() }
func (l *netListener) Protocol() string {
	if l.tls != nil {
		return "tls"
	}
	return "tcp"
}

func (l *netListener) Serve(establish listeners.EstablishFn) {
	var failures int
	var lastLog time.Time
	for {
		c, err := l.l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and the like: logged (at most every 10 s), then a pause
			// so the loop does not spin while descriptors are short.
			failures++
			if time.Since(lastLog) > 10*time.Second {
				l.log.Warn("mqtt accept failed", "listener", l.id, "err", err, "failures", failures)
				lastLog, failures = time.Now(), 0
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetNoDelay(true)
		}
		// The deadline covers the TLS handshake and the CONNECT; mochi
		// replaces it with the keep-alive one once CONNECT is read.
		c.SetDeadline(time.Now().Add(l.timeout))
		raw := c
		if l.tls != nil {
			c = tls.Server(c, l.tls)
		}
		cc := &coarseConn{Conn: c}
		l.pending.admit(cc)
		go func() {
			if tc, ok := c.(*tls.Conn); ok {
				if err := tc.Handshake(); err != nil {
					cc.Close()
					return
				}
				raw.SetDeadline(time.Now().Add(l.timeout)) // the CONNECT gets its own time after a slow handshake
			}
			establish(l.id, cc)
		}()
	}
}

func (l *netListener) Close(closeClients listeners.CloseFn) {
	l.once.Do(func() {
		l.l.Close()
		closeClients(l.id)
	})
}

// wsListener stands for the WebSocket connections the HTTP handler
// accepts, so mochi closes their clients at stop.
type wsListener struct {
	done chan struct{}
	once sync.Once
}

const wsListenerID = "ws"

func (l *wsListener) Init(*slog.Logger) error { return nil }
func (l *wsListener) ID() string              { return wsListenerID }
func (l *wsListener) Address() string         { return "/$iothub/websocket" }
func (l *wsListener) Protocol() string        { return "ws" }
func (l *wsListener) Serve(listeners.EstablishFn) {
	<-l.done
}
func (l *wsListener) Close(closeClients listeners.CloseFn) {
	l.once.Do(func() {
		close(l.done)
		closeClients(wsListenerID)
	})
}

var upgrader = websocket.Upgrader{
	Subprotocols:    []string{"mqtt"},
	CheckOrigin:     func(*http.Request) bool { return true }, // MQTT auth decides
	ReadBufferSize:  4096,
	WriteBufferSize: 4096,
}

// WebSocketHandler serves MQTT over WebSocket (path /$iothub/websocket);
// the web server mounts it outside its API auth, the MQTT CONNECT
// authenticates.
func (h *Hub) WebSocketHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-h.wsl.done:
			http.Error(w, "hub stopped", http.StatusServiceUnavailable)
			return
		default:
		}
		ws, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return // Upgrade answered
		}
		upgraded(ws.UnderlyingConn())
		c := &wsConn{Conn: ws.UnderlyingConn(), ws: ws, remote: r.RemoteAddr, page: foreignPage(r)}
		c.SetDeadline(time.Now().Add(h.cfg.ConnectTimeout)) // for the CONNECT
		cc := &coarseConn{Conn: c}
		h.pending.admit(cc)
		h.srv.EstablishConnection(wsListenerID, cc)
	})
}

// foreignPage reports whether a WebSocket request comes from a web page
// that is not the appliance's own on a loopback name (an Origin other
// than its Host, or a Host that is not localhost/127.0.0.1/[::1]: a page
// of another site, or one on a name rebound to 127.0.0.1). A WebSocket
// has no same-origin rule, so such a page is never taken for a loopback
// client in dev mode. Clients that are not browsers send no Origin.
func foreignPage(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return false
	}
	u, err := url.Parse(o)
	if err != nil || !strings.EqualFold(u.Host, r.Host) {
		return true
	}
	host := u.Hostname()
	if strings.EqualFold(host, "localhost") {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
}

// wsConn adapts a WebSocket to the byte stream mochi reads: binary
// messages are concatenated.
type wsConn struct {
	net.Conn
	ws     *websocket.Conn
	remote string
	page   bool // opened by a web page of another origin (foreignPage)
	rmu    sync.Mutex
	r      interface{ Read([]byte) (int, error) }
	wmu    sync.Mutex
}

func (c *wsConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if c.r == nil {
			op, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if op != websocket.BinaryMessage {
				continue
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if err != nil {
			c.r = nil
			if n > 0 {
				return n, nil
			}
			if err.Error() == "EOF" {
				continue
			}
			return 0, err
		}
		return n, nil
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) Close() error { return c.ws.Close() }

func (c *wsConn) SetDeadline(t time.Time) error {
	if err := c.ws.SetReadDeadline(t); err != nil {
		return err
	}
	return c.ws.SetWriteDeadline(t)
}
func (c *wsConn) SetReadDeadline(t time.Time) error  { return c.ws.SetReadDeadline(t) }
func (c *wsConn) SetWriteDeadline(t time.Time) error { return c.ws.SetWriteDeadline(t) }

// listenWebSocket binds an extra address that serves MQTT over WebSocket
// and module-to-module direct methods, over TLS with the hub's
// certificate unless hub.listen.websocketPlain: the Azure IoT SDKs'
// WebSocket transport always dials wss://<host>:443/$iothub/websocket,
// ModuleClient.invokeMethod https://<host>:443/twins/... .
func (h *Hub) listenWebSocket(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("hub websocket listen %s: %w", addr, err)
	}
	l = deadlineListener{Listener: l, timeout: h.cfg.ConnectTimeout, pending: h.pending}
	if !h.cfg.Listen.WebSocketPlain {
		l = tls.NewListener(l, h.certs.webTLSConfig())
	}
	mux := http.NewServeMux()
	mux.Handle("/$iothub/websocket", h.WebSocketHandler())
	mux.Handle("/twins/", h.methodsHandler()) // ModuleClient.invokeMethod (m2m.go)
	h.wsServer = &http.Server{Handler: mux, ReadHeaderTimeout: h.cfg.ConnectTimeout, IdleTimeout: h.cfg.ConnectTimeout,
		ErrorLog: log.New(serverErrors{h}, "", 0),
		// A method call whose caller is authenticated leaves the pending
		// connections (m2m.go): it needs the connection.
		ConnContext: func(ctx context.Context, c net.Conn) context.Context { return context.WithValue(ctx, connKey{}, c) }}
	h.wsLn = l
	return nil
}

// connKey is the context key of a request's connection on the hub's
// WebSocket port.
type connKey struct{}

// deadlineListener gives each accepted connection a deadline for its TLS
// handshake and HTTP upgrade (the WebSocket handler then sets the one for
// the CONNECT), and counts it among the hub's pending connections until
// it upgrades: past hub.maxPendingConnections the oldest is closed, as on
// the MQTT ports, so silent connections cannot take the process's file
// descriptors.
type deadlineListener struct {
	net.Listener
	timeout time.Duration
	pending *pendingConns
}

func (l deadlineListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(l.timeout))
	cc := &coarseConn{Conn: c}
	l.pending.admit(cc)
	return cc, nil
}

// upgraded ends the pending state of the TCP connection under a
// WebSocket (accepted by a deadlineListener): the WebSocket connection
// is pending in its place until its CONNECT.
func upgraded(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if cc, ok := c.(*coarseConn); ok {
		cc.release()
	}
}
