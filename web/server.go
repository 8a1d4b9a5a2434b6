package web

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
)

// ComponentHealth is one line of GET /healthz.
type ComponentHealth struct {
	Name   string `json:"name"`
	Status string `json:"status"` // "ok" or "failing"
	Error  string `json:"error,omitempty"`
}

// Options configure the server.
type Options struct {
	Listen string // TCP address, e.g. ":8080"
	// Timeouts bound slow clients (zero fields: the defaults).
	Timeouts Timeouts
	// ListenTLS and TLS serve HTTPS too (e.g. ":8443" with the hub's
	// certificate); both or neither.
	ListenTLS string
	TLS       *tls.Config
	Socket    string // unix socket for the local CLI; "" for none
	// DataDir is named when a request fails because its file system is
	// full.
	DataDir string
	Logger  *slog.Logger
	// Health reports each component and whether all are healthy.
	Health func(ctx context.Context) ([]ComponentHealth, bool)
	// Metrics serves GET /metrics (Prometheus text format).
	Metrics http.Handler
	Version string
	// Dev lets loopback clients use the API without credentials.
	Dev bool
	// DB holds web's own tables (admin password, sessions, API tokens);
	// without it only the CLI socket (and dev loopback) get in. The first
	// admin password is made by [EnsureAdminPassword], not here.
	DB *sql.DB
	// PasswordFile is where the first start kept the admin password; the
	// first login deletes it.
	PasswordFile string
	// DeviceID is shown in the page titles.
	DeviceID string
	// PublicMetrics serves /metrics without credentials (for a Prometheus
	// that cannot send a token).
	PublicMetrics bool
	// System reports the machine's state for the overview.
	System SystemSource
	// HubStatus, HubIdentities, HubTwins and HubMessages are the MQTT
	// hub's parts of the API (nil: their routes answer 503).
	HubStatus     HubStatus
	HubIdentities HubIdentities
	HubTwins      HubTwins
	HubMessages   HubMessages
	// Upstream is the link to the upstream broker (nil without one).
	Upstream UpstreamStatus
	// MQTTWebSocket serves MQTT over WebSocket at /$iothub/websocket,
	// outside the API's auth (the MQTT CONNECT authenticates).
	MQTTWebSocket http.Handler
	// Events feeds GET /api/v1/events/stream (server-sent events).
	Events EventFeed
	// Pipelines serves /api/v1/pipelines, Frames their frames (the live
	// feed, MJPEG, frame.jpg), EventLog /events and /snapshots (nil: the
	// routes answer 503).
	Pipelines Pipelines
	Frames    Frames
	EventLog  EventLog
	// Deployments serves /api/v1/deployments, Modules /api/v1/modules
	// (nil: no agent).
	Deployments Deployments
	Modules     Modules
	// Models serves /api/v1/models (nil: they answer 503).
	Models ModelStore
}

// Server serves HTTP on TCP and on the unix socket.
type Server struct {
	opts    Options
	log     *slog.Logger
	engine  *gin.Engine
	api     *gin.RouterGroup // /api/v1, behind requireAuth
	auth    *authStore       // nil without Options.DB
	limiter *loginLimiter
	conns   *connLimiter // the TCP and TLS connections not authenticated
	reqs    *reqLimiter  // the requests in flight on them
	timeout Timeouts
	tpl     *templates
	// stopping is closed when Run begins to shut down, ending streams.
	stopping chan struct{}
	tcp      net.Listener
	tlsl     net.Listener // nil without HTTPS
	unix     net.Listener
	started  time.Time
}

func init() { gin.SetMode(gin.ReleaseMode) }

// New binds the listeners (so a busy port fails here, before anything
// runs) and builds the routes.
func New(o Options) (*Server, error) {
	if o.TLS != nil {
		o.TLS = withHTTP2(o.TLS)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: o, log: o.Logger, started: time.Now(), limiter: newLoginLimiter(), stopping: make(chan struct{}),
		timeout: o.Timeouts.withDefaults()}
	s.conns = newConnLimiter(s.timeout.MaxAnonymousConns)
	s.reqs = newReqLimiter(s.timeout.MaxAnonymousConns)
	if o.DB != nil {
		var err error
		if s.auth, err = openAuthStore(context.Background(), o.DB); err != nil {
			return nil, err
		}
	}
	s.engine = gin.New()
	s.engine.Use(gin.CustomRecoveryWithWriter(io.Discard, s.recovered), securityHeaders, limitBody, serverTiming)
	if err := s.engine.SetTrustedProxies(nil); err != nil {
		return nil, err
	}
	if err := s.routes(); err != nil {
		return nil, err
	}

	tcp, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return nil, fmt.Errorf("http listen %s: %w", o.Listen, err)
	}
	s.tcp = limitedListener{tcp, s.conns}
	if o.ListenTLS != "" && o.TLS != nil {
		l, err := net.Listen("tcp", o.ListenTLS)
		if err != nil {
			s.tcp.Close()
			return nil, fmt.Errorf("https listen %s: %w", o.ListenTLS, err)
		}
		s.tlsl = tls.NewListener(limitedListener{l, s.conns}, o.TLS)
	}
	if o.Socket != "" {
		if s.unix, err = listenUnix(o.Socket); err != nil {
			s.tcp.Close()
			if s.tlsl != nil {
				s.tlsl.Close()
			}
			return nil, err
		}
	}
	return s, nil
}

// withHTTP2 offers HTTP/2 first in the TLS handshake (a copy: the
// configuration may be shared with other listeners), so a browser sends
// a page's requests, event streams and video over one connection instead of
// queueing behind HTTP/1.1's six per host.
func withHTTP2(c *tls.Config) *tls.Config {
	c = c.Clone()
	protos := []string{"h2"}
	for _, p := range c.NextProtos {
		if p != "h2" && p != "http/1.1" {
			protos = append(protos, p)
		}
	}
	c.NextProtos = append(protos, "http/1.1")
	return c
}

// listenUnix listens on path, replacing a stale socket file left by a
// killed ledge but refusing to steal one a live ledge still serves.
func listenUnix(path string) (net.Listener, error) {
	// sun_path holds 108 bytes with its NUL; past that bind says only
	// "invalid argument".
	if limit := 107; len(path) > limit {
		return nil, fmt.Errorf("control socket %s: %d bytes, more than the %d a unix socket path can have: use a shorter dataDir", path, len(path), limit)
	}
	if _, err := os.Stat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: another ledge is running with this data dir", path)
		}
		os.Remove(path)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return l, nil
}

// Close releases the listeners of a server that will not Run (Run closes
// them itself). It is safe to call more than once.
func (s *Server) Close() error {
	s.tcp.Close()
	if s.tlsl != nil {
		s.tlsl.Close()
	}
	if s.unix != nil {
		s.unix.Close()
		os.Remove(s.opts.Socket)
	}
	return nil
}

// Addr is the bound TCP address (useful with port 0).
func (s *Server) Addr() net.Addr { return s.tcp.Addr() }

// TLSAddr is the bound HTTPS address, nil without HTTPS.
func (s *Server) TLSAddr() net.Addr {
	if s.tlsl == nil {
		return nil
	}
	return s.tlsl.Addr()
}

// Handler is the HTTP handler, for tests.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// serveHTTP is in front of gin: HEAD is answered as GET without the body
// (net/http drops it), and a WebSocket upgrade leaves the timeouts and
// the anonymous count (its own protocol authenticates).
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if isUpgrade(r) {
		endless(w)
		promoteConn(r)
	} else if anonymousConn(r) {
		t := s.reqs.add(w)
		defer func() {
			// The answer is sent while the request is counted: HTTP/2
			// would otherwise wait for the client's flow-control window
			// after the handler returned, out of the count's reach.
			http.NewResponseController(w).Flush()
			t.finish()
		}()
		r = r.WithContext(context.WithValue(r.Context(), trackedReqKey{}, t))
	}
	if r.Method == http.MethodHead {
		r = r.WithContext(r.Context())
		r.Method = http.MethodGet
	}
	s.engine.ServeHTTP(w, r)
}

// Run serves until ctx ends, then shuts down gracefully (open streams are
// cut after a short grace period). TCP and TLS clients get the timeouts;
// the local CLI's socket only the header timeout.
func (s *Server) Run(ctx context.Context) error {
	newServer := func(t Timeouts) *http.Server {
		return &http.Server{
			Handler:           s.Handler(),
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       t.Read,
			WriteTimeout:      t.Write,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
			ConnContext:       func(ctx context.Context, c net.Conn) context.Context { return withTracked(connContext(ctx, c), c) },
			// A page needs a handful of requests at once (its event
			// stream, the live feed, API calls); Go's default of 250 let
			// each connection make hundreds of requests the server takes
			// in before any handler can refuse them.
			HTTP2: &http.HTTP2Config{MaxConcurrentStreams: maxStreams},
		}
	}
	srv := newServer(s.timeout)
	srv.IdleTimeout = s.timeout.Idle
	local := newServer(Timeouts{})
	errc := make(chan error, 3)
	serve := func(srv *http.Server, l net.Listener) {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}
	go serve(srv, s.tcp)
	if s.unix != nil {
		go serve(local, s.unix)
	}
	https := ""
	if s.tlsl != nil {
		go serve(srv, s.tlsl)
		https = s.tlsl.Addr().String()
	}
	s.log.Info("http listening", "addr", s.tcp.Addr().String(), "https", https, "socket", s.opts.Socket)
	select {
	case <-ctx.Done():
	case err := <-errc:
		srv.Close()
		local.Close()
		return fmt.Errorf("http: %w", err)
	}
	close(s.stopping) // end event and video streams, which never go idle
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, v := range []*http.Server{srv, local} {
		wg.Go(func() {
			if err := v.Shutdown(sctx); err != nil {
				v.Close()
			}
		})
	}
	wg.Wait()
	if s.opts.Socket != "" {
		os.Remove(s.opts.Socket)
	}
	return nil
}

func (s *Server) routes() error {
	s.engine.GET("/healthz", s.healthz)
	if s.opts.Metrics != nil {
		if s.opts.PublicMetrics {
			s.engine.GET("/metrics", gin.WrapH(s.opts.Metrics))
		} else {
			s.engine.GET("/metrics", s.requireAuth, gin.WrapH(s.opts.Metrics))
		}
	}
	s.engine.POST("/api/v1/auth/login", s.login)
	s.engine.GET("/api/v1/openapi.json", s.openAPIDoc)
	s.api = s.engine.Group("/api/v1", s.requireAuth)
	s.api.GET("/system", s.system)
	s.api.GET("/health", s.health)
	s.api.GET("/auth/whoami", s.whoami)
	s.api.GET("/events/stream", s.eventStream)
	s.api.POST("/auth/logout", s.logout)
	s.hubRoutes()
	if s.opts.MQTTWebSocket != nil {
		s.engine.GET("/$iothub/websocket", gin.WrapH(s.opts.MQTTWebSocket))
	}
	s.deployRoutes()
	s.modelRoutes()
	s.pipelineRoutes()
	if err := s.pageRoutes(); err != nil {
		return err
	}
	s.engine.NoRoute(s.notFound)
	return nil
}

// healthz answers 503 when a component fails, for probes and load
// balancers. It needs no credentials, so to a caller without them it says
// which component fails but not why, nor the version: the reasons (a
// socket path, a registry's address, an upstream's name) are for the
// operator, as the dashboard and `ledge status` show them.
func (s *Server) healthz(c *gin.Context) {
	body, ok := s.healthReport(c)
	code := http.StatusOK
	if !ok {
		code = http.StatusServiceUnavailable
	}
	if s.identify(c).kind == authNone {
		comps, _ := body["components"].([]ComponentHealth)
		bare := make([]ComponentHealth, len(comps))
		for i, h := range comps {
			bare[i] = ComponentHealth{Name: h.Name, Status: h.Status}
		}
		body = gin.H{"status": body["status"], "uptime": body["uptime"], "components": bare}
	}
	c.JSON(code, body)
}

// health is the same report under /api/v1, answered 200 whatever the
// health: the dashboard reads it (a 503 would be a console error on every
// refresh of the Overview).
func (s *Server) health(c *gin.Context) {
	body, _ := s.healthReport(c)
	c.JSON(http.StatusOK, body)
}

func (s *Server) healthReport(c *gin.Context) (gin.H, bool) {
	var comps []ComponentHealth
	ok := true
	if s.opts.Health != nil {
		comps, ok = s.opts.Health(c.Request.Context())
	}
	status := "ok"
	if !ok {
		status = "failing"
	}
	return gin.H{
		"status":     status,
		"version":    s.opts.Version,
		"uptime":     uptimeText(time.Since(s.started)),
		"components": comps,
	}, ok
}

// serverTiming reports the handler's time in a Server-Timing header
// (browsers show it in their network panel; the benchmarks read it). It is
// set before the body is written; streams get none.
func serverTiming(c *gin.Context) {
	start := time.Now()
	w := &timingWriter{ResponseWriter: c.Writer, start: start}
	c.Writer = w
	c.Next()
}

// timingWriter stamps Server-Timing when the response starts going out
// (gin defers the status line to the first write).
type timingWriter struct {
	gin.ResponseWriter
	start   time.Time
	stamped bool
}

func (w *timingWriter) stamp() {
	if !w.stamped {
		w.stamped = true
		h := w.ResponseWriter.Header()
		if isStream(h.Get("Content-Type")) {
			h.Del("Server-Timing")
			endless(w.ResponseWriter) // a stream lasts as long as its client watches
			return
		}
		h.Set("Server-Timing", fmt.Sprintf("app;dur=%.3f", float64(time.Since(w.start).Microseconds())/1000))
	}
}

func (w *timingWriter) WriteHeaderNow() { w.stamp(); w.ResponseWriter.WriteHeaderNow() }
func (w *timingWriter) Write(b []byte) (int, error) {
	w.stamp()
	return w.ResponseWriter.Write(b)
}
func (w *timingWriter) WriteString(s string) (int, error) {
	w.stamp()
	return w.ResponseWriter.WriteString(s)
}

func (s *Server) recovered(c *gin.Context, v any) {
	id := newErrorID()
	s.log.Error("handler panic", "id", id, "path", c.Request.URL.Path, "panic", v, "stack", string(debug.Stack()))
	writeErrorID(c, http.StatusInternalServerError, "internal", "internal error", id)
}

// securityHeaders are on every answer: no MIME sniffing, no referrer to
// other sites, and over HTTPS, HSTS.
func securityHeaders(c *gin.Context) {
	h := c.Writer.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	if c.Request.TLS != nil {
		h.Set("Strict-Transport-Security", "max-age=31536000")
	}
	c.Next()
}
