package workload

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"ledge/internal/fault"
)

// Keys signs and certifies for modules: implemented by the hub, whose
// identities hold the module keys and whose CA modules trust.
type Keys interface {
	// Sign returns HMAC-SHA256 of data under module's identity key. It
	// fails with fault.Forbidden when genID is not the identity's
	// generation id, fault.NotFound when the module has no identity.
	Sign(ctx context.Context, module, genID string, data []byte) ([]byte, error)
	// TrustBundle is the PEM of the CA that modules trust (the hub's).
	TrustBundle() ([]byte, error)
	// ServerCertificate issues a TLS server certificate for commonName,
	// signed by the trust bundle's CA, valid until notAfter at the
	// latest; it returns the certificate chain, the private key (PEM)
	// and the real expiry.
	ServerCertificate(ctx context.Context, module, commonName string, notAfter time.Time) (chain, key []byte, expires time.Time, err error)
}

// SocketName is the socket's name in a module's folder, and
// ContainerDir where that folder is mounted in the container.
const (
	SocketName   = "workload.sock"
	ContainerDir = "/var/run/iotedge"
	// URI is IOTEDGE_WORKLOADURI inside containers.
	URI = "unix://" + ContainerDir + "/" + SocketName
)

// APIVersions are the workload API versions served (reference §5.2):
// the routes here are the same in all of them.
var APIVersions = []string{"2018-06-28", "2019-01-30", "2019-10-22", "2019-11-05", "2020-07-07", "2021-12-07", "2022-08-03"}

// maxConns is how many connections one module's socket serves at once.
const maxConns = 10

// maxBody bounds a request body.
const maxBody = 64 << 10

// Server serves one socket per module under dir.
type Server struct {
	dir  string
	keys Keys
	log  *slog.Logger

	mu    sync.Mutex // guards socks
	socks map[string]*socket
}

type socket struct {
	module string
	genID  atomic.Pointer[string]
	ln     net.Listener
	srv    *http.Server
	active atomic.Int32
}

// New prepares a server whose sockets live under dir (made 0700).
func New(dir string, keys Keys, log *slog.Logger) (*Server, error) {
	if keys == nil {
		return nil, errors.New("workload: keys are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("workload sockets: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("workload sockets: %w", err)
	}
	return &Server{dir: dir, keys: keys, log: log, socks: map[string]*socket{}}, nil
}

// maxSocketPath is the longest path a unix socket can have on Linux
// (sun_path, 108 bytes with its NUL); past it bind says only "invalid
// argument".
const maxSocketPath = 107

var moduleNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// Dir is the host folder that holds module's socket: what the agent
// mounts at ContainerDir.
func (s *Server) Dir(module string) string { return filepath.Join(s.dir, module) }

// Ensure serves module's socket (made if it is not served yet) for
// identity generation genID, and returns its folder.
func (s *Server) Ensure(module, genID string) (string, error) {
	if !moduleNameRe.MatchString(module) {
		return "", fmt.Errorf("workload socket: %q is not a module name", module)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if sk := s.socks[module]; sk != nil {
		sk.genID.Store(&genID)
		return s.Dir(module), nil
	}
	dir := s.Dir(module)
	path := filepath.Join(dir, SocketName)
	if len(path) > maxSocketPath {
		return "", fmt.Errorf("workload socket of %s: %s is %d bytes, more than the %d a unix socket path can have: use a shorter dataDir or module name",
			module, path, len(path), maxSocketPath)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("workload socket of %s: %w", module, err)
	}
	os.Remove(path) // left by a ledge that stopped
	ln, err := net.Listen("unix", path)
	if err != nil {
		return "", fmt.Errorf("workload socket of %s: %w", module, err)
	}
	// The socket file is removed here, not by the listener's Close: a
	// Serve goroutine that starts after Remove would otherwise unlink the
	// socket made again for the module since.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	// Whatever user the module runs as may connect; the folder's mount
	// is the only way in besides root.
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return "", fmt.Errorf("workload socket of %s: %w", module, err)
	}
	sk := &socket{module: module}
	sk.genID.Store(&genID)
	sk.ln = &limitListener{Listener: ln, sk: sk}
	sk.srv = &http.Server{
		Handler:           s.handler(sk),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	go func() {
		if err := sk.srv.Serve(sk.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Warn("workload socket", "module", module, "err", err)
		}
	}()
	s.socks[module] = sk
	return dir, nil
}

// Remove stops serving module's socket and removes its folder.
func (s *Server) Remove(module string) {
	s.mu.Lock()
	sk := s.socks[module]
	delete(s.socks, module)
	s.mu.Unlock()
	if sk != nil {
		sk.srv.Close()
		sk.ln.Close()
	}
	if moduleNameRe.MatchString(module) {
		os.RemoveAll(s.Dir(module))
	}
}

// Close stops serving every socket. The folders stay: the running
// containers keep their mounts, and a ledge that starts again serves
// them anew.
func (s *Server) Close() error {
	s.mu.Lock()
	socks := s.socks
	s.socks = map[string]*socket{}
	s.mu.Unlock()
	for _, sk := range socks {
		sk.srv.Close()
		sk.ln.Close()
		os.Remove(filepath.Join(s.Dir(sk.module), SocketName))
	}
	return nil
}

// limitListener closes connections over maxConns at once.
type limitListener struct {
	net.Listener
	sk *socket
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.sk.active.Add(1) > maxConns {
			l.sk.active.Add(-1)
			c.Close()
			continue
		}
		return &countedConn{Conn: c, sk: l.sk}, nil
	}
}

type countedConn struct {
	net.Conn
	sk   *socket
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.sk.active.Add(-1) })
	return c.Conn.Close()
}

// handler serves one module's socket.
func (s *Server) handler(sk *socket) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		if v := r.URL.Query().Get("api-version"); !slices.Contains(APIVersions, v) {
			if v == "" {
				fail(w, http.StatusBadRequest, "api-version is required (e.g. ?api-version=2018-06-28)")
			} else {
				fail(w, http.StatusBadRequest, fmt.Sprintf("api-version %q is not supported: want one of %s", v, strings.Join(APIVersions, ", ")))
			}
			return
		}
		path := r.URL.EscapedPath()
		switch {
		case path == "/trust-bundle":
			if r.Method != http.MethodGet {
				fail(w, http.StatusMethodNotAllowed, "GET /trust-bundle")
				return
			}
			ca, err := s.keys.TrustBundle()
			if err != nil {
				s.internal(w, sk, "trust bundle", err)
				return
			}
			reply(w, map[string]string{"certificate": string(ca)})
		case strings.HasPrefix(path, "/modules/"):
			s.module(w, r, sk, strings.Split(strings.TrimPrefix(path, "/modules/"), "/"))
		default:
			fail(w, http.StatusNotFound, fmt.Sprintf("%s %s: no such workload API route (ledge serves /trust-bundle, /modules/{name}/genid/{genid}/sign and .../certificate/server)", r.Method, path))
		}
	})
}

// module serves /modules/{name}/genid/{genid}/{sign | certificate/server}.
func (s *Server) module(w http.ResponseWriter, r *http.Request, sk *socket, parts []string) {
	if len(parts) < 4 || parts[1] != "genid" {
		fail(w, http.StatusNotFound, "want /modules/{name}/genid/{genid}/sign or /modules/{name}/genid/{genid}/certificate/server")
		return
	}
	// Segments are URL-encoded: %24edgeHub is $edgeHub.
	name, err1 := url.PathUnescape(parts[0])
	genID, err2 := url.PathUnescape(parts[2])
	op := strings.Join(parts[3:], "/")
	if err1 != nil || err2 != nil {
		fail(w, http.StatusBadRequest, "bad escape in the module name or generation id")
		return
	}
	if r.Method != http.MethodPost {
		fail(w, http.StatusMethodNotAllowed, "POST /modules/{name}/genid/{genid}/"+op)
		return
	}
	if name != sk.module {
		s.log.Warn("workload API: a module asked for another module's identity", "module", sk.module, "asked", name, "op", op)
		fail(w, http.StatusForbidden, fmt.Sprintf("this socket serves module %q: it may only sign for itself, not for %q", sk.module, name))
		return
	}
	if cur := *sk.genID.Load(); genID != cur {
		fail(w, http.StatusForbidden, fmt.Sprintf("generation id %q is not that of module %q's identity (it was made again: restart the module to get the new IOTEDGE_MODULEGENERATIONID)", genID, name))
		return
	}
	switch op {
	case "sign":
		s.sign(w, r, sk, genID)
	case "certificate/server":
		s.serverCert(w, r, sk)
	default:
		fail(w, http.StatusNotFound, fmt.Sprintf("%q is not served: ledge serves sign and certificate/server", op))
	}
}

type signRequest struct {
	KeyID string `json:"keyId"`
	Algo  string `json:"algo"`
	Data  string `json:"data"`
}

func (s *Server) sign(w http.ResponseWriter, r *http.Request, sk *socket, genID string) {
	var req signRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Algo != "" && req.Algo != "HMACSHA256" {
		fail(w, http.StatusBadRequest, fmt.Sprintf("algo %q is not supported: want HMACSHA256", req.Algo))
		return
	}
	if req.KeyID != "" && req.KeyID != "primary" && req.KeyID != "secondary" {
		fail(w, http.StatusBadRequest, fmt.Sprintf("keyId %q: want primary", req.KeyID))
		return
	}
	data, err := base64.StdEncoding.DecodeString(req.Data)
	if err != nil || req.Data == "" {
		fail(w, http.StatusBadRequest, "data: want the bytes to sign in base64")
		return
	}
	digest, err := s.keys.Sign(r.Context(), sk.module, genID, data)
	if err != nil {
		s.keyError(w, sk, "sign", err)
		return
	}
	reply(w, map[string]string{"digest": base64.StdEncoding.EncodeToString(digest)})
}

type certRequest struct {
	CommonName string `json:"commonName"`
	Expiration string `json:"expiration"`
}

func (s *Server) serverCert(w http.ResponseWriter, r *http.Request, sk *socket) {
	var req certRequest
	if !decode(w, r, &req) {
		return
	}
	if !strings.EqualFold(req.CommonName, sk.module) {
		fail(w, http.StatusForbidden, fmt.Sprintf("commonName %q: module %q may only have a server certificate for its own name, %q (its host name on the module network)", req.CommonName, sk.module, sk.module))
		return
	}
	exp, err := time.Parse(time.RFC3339, req.Expiration)
	if err != nil {
		fail(w, http.StatusBadRequest, fmt.Sprintf("expiration %q: want an ISO-8601 time, e.g. 2030-01-01T00:00:00Z", req.Expiration))
		return
	}
	if !exp.After(time.Now()) {
		fail(w, http.StatusBadRequest, fmt.Sprintf("expiration %s is in the past", req.Expiration))
		return
	}
	chain, key, expires, err := s.keys.ServerCertificate(r.Context(), sk.module, req.CommonName, exp)
	if err != nil {
		s.keyError(w, sk, "server certificate", err)
		return
	}
	reply(w, map[string]any{
		"privateKey":  map[string]string{"type": "key", "bytes": string(key)},
		"certificate": string(chain),
		"expiration":  expires.UTC().Format(time.RFC3339),
	})
}

func (s *Server) keyError(w http.ResponseWriter, sk *socket, what string, err error) {
	switch fault.KindOf(err) {
	case fault.Forbidden:
		fail(w, http.StatusForbidden, err.Error())
	case fault.NotFound:
		fail(w, http.StatusNotFound, err.Error())
	case fault.Invalid:
		fail(w, http.StatusBadRequest, err.Error())
	case fault.Unavailable:
		fail(w, http.StatusServiceUnavailable, err.Error())
	default:
		s.internal(w, sk, what, err)
	}
}

func (s *Server) internal(w http.ResponseWriter, sk *socket, what string, err error) {
	s.log.Error("workload API", "module", sk.module, "op", what, "err", err)
	fail(w, http.StatusInternalServerError, what+" failed (see ledge's log)")
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	data, err := io.ReadAll(r.Body)
	if err != nil {
		fail(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes", maxBody))
		return false
	}
	if err := json.Unmarshal(data, v); err != nil {
		fail(w, http.StatusBadRequest, "malformed JSON body: "+err.Error())
		return false
	}
	return true
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"message": msg})
}
