package models

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"ledge/internal/fault"
)

// Where a model may come from. file:// sources are read only under
// models.fileRoots and the data dir (links followed), so a deployment
// cannot make ledge read any file of the host. An http(s) source may
// redirect, but not from the outside to this machine's loopback, to a
// link-local address (169.254.169.254 answers cloud metadata there), to
// another cloud metadata address (fd00:ec2::254, 100.100.100.200) or to
// the unspecified address, unless the first URL was already one: a model
// server on the LAN cannot make ledge fetch from its own local services.

// fileRoots returns the folders file:// sources may read, cleaned, and
// with links resolved where they exist.
func fileRoots(cfg Config, dataDir string) []string {
	var out []string
	for _, r := range append(append([]string(nil), cfg.FileRoots...), dataDir) {
		if r == "" {
			continue
		}
		r = filepath.Clean(r)
		out = append(out, r)
		if real, err := filepath.EvalSymlinks(r); err == nil && real != r {
			out = append(out, real)
		}
	}
	return out
}

// checkFileSource refuses a file:// path outside the roots; resolve
// follows links first (at read time).
func (s *Store) checkFileSource(path string, resolve bool) error {
	p := filepath.Clean(path)
	if resolve {
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			return err
		}
		p = real
	}
	for _, r := range s.roots {
		if p == r || r == "/" || strings.HasPrefix(p, r+"/") {
			return nil
		}
	}
	what := path
	if p != filepath.Clean(path) {
		what = fmt.Sprintf("%s (a link to %s)", path, p)
	}
	return fault.New(fault.Invalid, "file://%s is outside models.fileRoots and the data dir: ledge reads model files only there; add the folder to models.fileRoots in ledge.yaml", what)
}

// ImportDir is the drop folder in the data dir: a file:// source in it is
// removed once it is verified and stored (`ledge models pull --file`
// copies files from elsewhere there).
func ImportDir(dataDir string) string { return filepath.Join(dataDir, "import") }

// consumeImport removes a stored file:// source that was in the import
// folder.
func (s *Store) consumeImport(path string) {
	if !s.isImport(path) {
		return
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("remove an imported model file", "file", path, "err", err)
	}
}

// consumeImportURL is consumeImport for a version whose bytes the store
// already had (another version brought them): its file:// source in the
// import folder is not read, and goes all the same.
func (s *Store) consumeImportURL(raw string) {
	if u, err := url.Parse(raw); err == nil && u.Scheme == "file" {
		s.consumeImport(u.Path)
	}
}

// isImport says whether path is in the import folder.
func (s *Store) isImport(path string) bool {
	return s.importDir != "" && strings.HasPrefix(filepath.Clean(path), s.importDir+"/")
}

// metadataAddrs are cloud instance-metadata services outside the
// link-local range: AWS's IPv6 endpoint and Alibaba Cloud's (in the
// shared address space 100.64.0.0/10, which as a whole is a LAN's or a
// VPN's, so only the one address).
var metadataAddrs = []netip.Addr{
	netip.MustParseAddr("fd00:ec2::254"),
	netip.MustParseAddr("100.100.100.200"),
}

// internalAddr says what a local-only address is, or "".
func internalAddr(ip netip.Addr) string {
	ip = ip.Unmap()
	switch {
	case ip.IsLoopback():
		return "loopback"
	case ip.IsLinkLocalUnicast():
		return "link-local"
	case ip.IsUnspecified():
		return "unspecified"
	case slices.Contains(metadataAddrs, ip):
		return "cloud metadata"
	}
	return ""
}

// hostInternal says whether host (a name or an address) is or resolves to
// an internal address, and which.
func hostInternal(ctx context.Context, host string) string {
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return internalAddr(ip)
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return ""
	}
	for _, ip := range ips {
		if k := internalAddr(ip); k != "" {
			return k
		}
	}
	return ""
}

// redirectPolicy is what a download's context carries: whether its first
// URL was internal (then anything goes), and whether connections are made
// directly (then the dialer checks the addresses it connects to).
type redirectPolicy struct {
	internalOK bool
	direct     bool
}

type redirectKey struct{}

// withRedirectPolicy notes in ctx what the download of raw may reach.
func withRedirectPolicy(ctx context.Context, raw string) context.Context {
	u, err := url.Parse(raw)
	if err != nil {
		return ctx
	}
	p := redirectPolicy{internalOK: hostInternal(ctx, u.Hostname()) != ""}
	if req, err := http.NewRequest(http.MethodGet, raw, nil); err == nil {
		if proxy, err := http.ProxyFromEnvironment(req); err == nil && proxy == nil {
			p.direct = true
		}
	}
	return context.WithValue(ctx, redirectKey{}, p)
}

// checkRedirect refuses a redirect to an internal host (by name or
// address) when the first URL was not internal.
func checkRedirect(req *http.Request) error {
	p, ok := req.Context().Value(redirectKey{}).(redirectPolicy)
	if !ok || p.internalOK {
		return nil
	}
	if k := hostInternal(req.Context(), req.URL.Hostname()); k != "" {
		return &permanent{fmt.Errorf("redirected to %s, a %s address: refused (the first URL was not one)", redact(req.URL), k)}
	}
	return nil
}

// errInternalDial is a connection refused by the dialer's check.
var errInternalDial = errors.New("refused")

// dialControl checks the address a direct connection goes to (names are
// resolved by then, so a name that changes its address in between does
// not get through).
func dialControl(ctx context.Context, network, address string, _ syscall.RawConn) error {
	p, ok := ctx.Value(redirectKey{}).(redirectPolicy)
	if !ok || p.internalOK || !p.direct {
		return nil
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil
	}
	if k := internalAddr(ap.Addr()); k != "" {
		return fmt.Errorf("connect to %s, a %s address, after a redirect: %w", address, k, errInternalDial)
	}
	return nil
}
