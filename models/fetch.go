package models

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	redactpkg "ledge/internal/redact"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"ledge/internal/fault"
)

// permanent marks a transfer error that retrying cannot fix (404, a wrong
// digest, over the size limit).
type permanent struct{ err error }

func (p *permanent) Error() string { return p.err.Error() }
func (p *permanent) Unwrap() error { return p.err }

func isPermanent(err error) bool {
	var p *permanent
	return errors.As(err, &p)
}

// newHTTPClient builds the client downloads use: bounded connect and
// header waits (the body is watched for stalls instead of timed as a
// whole), proxies from the environment, limited redirects that never
// downgrade to plain http unless allowed.
func newHTTPClient(cfg Config, tlsConf *tls.Config) *http.Client {
	d := cfg.Download
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: d.ConnectTimeout, KeepAlive: 30 * time.Second, ControlContext: dialControl}).DialContext,
		TLSHandshakeTimeout:   d.ConnectTimeout,
		ResponseHeaderTimeout: d.ConnectTimeout,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   2,
		ForceAttemptHTTP2:     true,
	}
	if tlsConf != nil {
		tr.TLSClientConfig = tlsConf.Clone()
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > d.MaxRedirects {
				return &permanent{fmt.Errorf("more than %d redirects", d.MaxRedirects)}
			}
			switch req.URL.Scheme {
			case "https":
			case "http":
				if !cfg.AllowHTTP {
					return &permanent{fmt.Errorf("redirected to %s: plain http is refused (models.allowHTTP)", redact(req.URL))}
				}
			default:
				return &permanent{fmt.Errorf("redirected to %s: scheme %q is not allowed", redact(req.URL), req.URL.Scheme)}
			}
			return checkRedirect(req)
		},
	}
}

// redact drops the query (often a signed token) from a URL for messages.
func redact(u *url.URL) string { return redactpkg.URL(u.String()) }

func redactString(raw string) string {
	// An oci:// reference by digest ends in "@sha256:...", which is no
	// userinfo: redact what is before it only.
	if strings.HasPrefix(raw, "oci://") {
		if i := strings.LastIndex(raw, "@sha256:"); i >= 0 {
			return redactpkg.URL(raw[:i]) + raw[i:]
		}
	}
	return redactpkg.URL(raw)
}

// fetch downloads t into its partial file and publishes it under its
// digest, retrying with back-off and resuming where a transfer broke. A
// resumed transfer whose digest does not match starts over from byte 0,
// once.
func (s *Store) fetch(ctx context.Context, t *transfer) error {
	d := s.cfg.Download
	wait := d.Backoff
	startedOver := false
	for attempt := 1; ; attempt++ {
		err := s.fetchOnce(ctx, t, attempt)
		if err == nil || ctx.Err() != nil {
			return err
		}
		if rm, ok := errors.AsType[*resumedMismatch](err); ok {
			if startedOver {
				err = rm.permanent()
			}
			startedOver = true
		}
		if isPermanent(err) || attempt > d.Retries {
			return err
		}
		// A WARN when it starts failing; the retries after it are INFO
		// (the give-up is a WARN of its own).
		level := slog.LevelInfo
		if attempt == 1 {
			level = slog.LevelWarn
		}
		s.log.Log(ctx, level, "model download failed, retrying", "model", t.name, "version", t.ver, "url", redactString(t.url),
			"attempt", attempt, "retryIn", wait, "err", err)
		s.publishState(t.name, t.ver, StateDownloading, "retrying in "+wait.String()+": "+err.Error())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, d.MaxBackoff)
	}
}

// resumedMismatch is a digest mismatch of a transfer that resumed at off:
// what was resumed may not be what the source has now, so fetch starts
// over from byte 0 (once).
type resumedMismatch struct {
	digest string
	off    int64
}

func (e *resumedMismatch) Error() string {
	return fmt.Sprintf("digest mismatch after resuming at byte %d: starting over", e.off)
}

func (e *resumedMismatch) permanent() error { return digestMismatch(e.digest) }

// digestMismatch is the error of a file whose sha256 is not the one the
// manifest says. The digest of what was read is not told: it would let
// anyone who can name a source learn the hash of a file.
func digestMismatch(digest string) error {
	return &permanent{fault.New(fault.Invalid, "digest mismatch: the file's sha256 is not %s, the one the manifest says", digest)}
}

// fetchOnce is one attempt: resume the partial file, open the source from
// where it ends, copy the rest, verify and publish.
func (s *Store) fetchOnce(ctx context.Context, t *transfer, attempt int) error {
	p, err := s.openPartial(t)
	if err != nil {
		return err
	}
	defer p.close()
	b, err := s.openSource(ctx, t, p.off, p.resume)
	if err != nil {
		return err
	}
	defer b.close()
	if b.off == 0 && p.off > 0 {
		// The source sends the file whole.
		if err := p.restart(); err != nil {
			return err
		}
	}
	off, total := b.off, b.total
	if err := s.checkSize(t, total); err != nil {
		return err
	}
	if total > 0 {
		if err := s.makeRoom(ctx, total-off, t.digest); err != nil {
			return &permanent{err}
		}
	}
	t.begin(attempt, off, total)
	s.publishProgress(t)

	limit := s.cfg.MaxModelBytes
	if t.size > 0 {
		limit = t.size
	}
	n, err := s.copyBody(ctx, p.f, p.h, b, t, off, total, limit, b.stall)
	if err != nil {
		return err
	}
	if err := s.verify(ctx, t, p, off, off+n, total); err != nil {
		return err
	}
	if total == 0 {
		if err := s.makeRoom(ctx, 0, t.digest); err != nil {
			s.removePartial(t.digest)
			return &permanent{err}
		}
	}
	if err := s.publish(t.digest, p.f); err != nil {
		return &permanent{err}
	}
	p.published()
	if b.stored != nil {
		b.stored()
	}
	return nil
}

// partial is the partial file of a transfer, hashed up to off, where the
// next bytes go.
type partial struct {
	f      *os.File
	h      hash.Hash
	off    int64
	resume resumeInfo // what the source said when the file was begun
	closed bool
}

// openPartial opens t's partial file, keeps what it holds when it came
// from the same source (hashing it), and positions it at its end.
func (s *Store) openPartial(t *transfer) (*partial, error) {
	f, err := os.OpenFile(s.partialPath(t.digest), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, &permanent{fmt.Errorf("open partial file: %w", err)}
	}
	p := &partial{f: f, h: sha256.New(), resume: s.readResume(t.digest)}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	p.off = st.Size()
	if p.resume.URL != t.url {
		p.off = 0 // another source: start over
	}
	if p.off > 0 {
		if _, err := io.Copy(p.h, io.LimitReader(f, p.off)); err != nil {
			f.Close()
			return nil, fmt.Errorf("read partial file: %w", err)
		}
	}
	if err := p.truncate(p.off); err != nil {
		f.Close()
		return nil, err
	}
	return p, nil
}

func (p *partial) truncate(off int64) error {
	if err := p.f.Truncate(off); err != nil {
		return err
	}
	_, err := p.f.Seek(off, io.SeekStart)
	return err
}

// restart empties the partial file for a source that sends it whole.
func (p *partial) restart() error {
	p.h.Reset()
	p.off = 0
	return p.truncate(0)
}

// published marks the file as handed over (publish closed its name).
func (p *partial) published() {
	p.f.Close()
	p.closed = true
}

func (p *partial) close() {
	if !p.closed {
		p.f.Close()
	}
}

// verify checks the length and the digest of what the partial file holds
// once the body ended at byte got.
func (s *Store) verify(ctx context.Context, t *transfer, p *partial, off, got, total int64) error {
	if total > 0 && got != total {
		return fmt.Errorf("the transfer ended at byte %d of %d", got, total)
	}
	if t.size > 0 && got != t.size {
		return &permanent{fmt.Errorf("the file has %d bytes, the manifest says size %d", got, t.size)}
	}
	s.setDigestState(ctx, t.digest, StateVerifying, "")
	if hex.EncodeToString(p.h.Sum(nil)) == t.digest {
		return nil
	}
	s.removePartial(t.digest)
	if off > 0 {
		return &resumedMismatch{digest: t.digest, off: off}
	}
	return digestMismatch(t.digest)
}

// A body is a source's answer for one attempt: the file from off on.
type body struct {
	io.ReadCloser
	off   int64       // where the body starts in the file: 0 when the source sends it whole
	total int64       // the file's size; 0 when the source does not say
	stall *time.Timer // reset on every read (network sources); nil for local files
	// stored runs once the file is verified and stored (nil: nothing to do).
	stored func()
	stop   func() // ends what the attempt started (nil: nothing)
}

func (b *body) close() {
	b.Close()
	if b.stop != nil {
		b.stop()
	}
}

// openSource opens t's source from byte off (resume says what the source
// answered when the partial file was begun). Each kind of source is one
// opener.
func (s *Store) openSource(ctx context.Context, t *transfer, off int64, resume resumeInfo) (*body, error) {
	u, err := url.Parse(t.url)
	if err != nil {
		return nil, &permanent{fault.New(fault.Invalid, "source %s: %v", redactString(t.url), err)}
	}
	switch u.Scheme {
	case "file":
		return s.openFileSource(t, u.Path, off)
	case "http", "https":
		return s.openHTTPSource(ctx, t, off, resume)
	case "oci":
		return s.openOCISource(ctx, t, off)
	}
	return nil, &permanent{fault.New(fault.Invalid, "source %s: scheme %q is not supported", redactString(t.url), u.Scheme)}
}

// openFileSource opens a file:// source (under the allowed roots) at off;
// the file is removed once stored when it came from the import folder.
func (s *Store) openFileSource(t *transfer, path string, off int64) (*body, error) {
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) && s.isImport(path) {
		// Handed over by `ledge models pull --file` and removed once
		// stored: with the stored copy lost, nothing can fetch it.
		return nil, &permanent{fault.New(fault.NotFound, "its file is gone from the store, and it came from `ledge models pull --file`, whose copy is not kept: pull it again with --file")}
	}
	if err := s.checkFileSource(path, true); err != nil {
		return nil, &permanent{err}
	}
	rc, off, total, err := s.openFile(path, off)
	if err != nil {
		return nil, err
	}
	if off == 0 {
		s.writeResume(t.digest, resumeInfo{URL: t.url, Total: total})
	}
	return &body{ReadCloser: rc, off: off, total: total, stored: func() { s.consumeImport(path) }}, nil
}

// openHTTPSource sends the request, resuming at off, under a stall timer:
// no answer, or no bytes, for the stall timeout ends the attempt.
func (s *Store) openHTTPSource(ctx context.Context, t *transfer, off int64, resume resumeInfo) (*body, error) {
	rctx, cancel := context.WithCancel(ctx)
	stall := time.AfterFunc(s.cfg.Download.StallTimeout, cancel)
	stop := func() { stall.Stop(); cancel() }
	rc, off, total, rinfo, err := s.openHTTP(rctx, t, off, resume)
	if err != nil {
		if rctx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("no answer within %s", s.cfg.Download.StallTimeout)
		}
		stop()
		return nil, err
	}
	rinfo.URL = t.url
	s.writeResume(t.digest, rinfo)
	return &body{ReadCloser: rc, off: off, total: total, stall: stall, stop: stop}, nil
}

// openOCISource resolves an oci:// reference and fetches its model layer
// from off (oci.go), under a stall timer as for http.
func (s *Store) openOCISource(ctx context.Context, t *transfer, off int64) (*body, error) {
	rctx, cancel := context.WithCancel(ctx)
	stall := time.AfterFunc(s.cfg.Download.StallTimeout, cancel)
	stop := func() { stall.Stop(); cancel() }
	rc, off, total, err := s.openOCI(rctx, t, off)
	if err != nil {
		if rctx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("no answer within %s", s.cfg.Download.StallTimeout)
		}
		stop()
		return nil, err
	}
	s.writeResume(t.digest, resumeInfo{URL: t.url, Total: total})
	return &body{ReadCloser: rc, off: off, total: total, stall: stall, stop: stop}, nil
}

// checkSize refuses a file over the limits before its bytes come.
func (s *Store) checkSize(t *transfer, total int64) error {
	switch {
	case total <= 0:
		return nil
	case t.size > 0 && total != t.size:
		return &permanent{fmt.Errorf("the server has %d bytes, the manifest says size %d", total, t.size)}
	case total > s.cfg.MaxModelBytes:
		return &permanent{fault.New(fault.TooLarge, "the file has %d bytes, over models.maxModelBytes %d", total, s.cfg.MaxModelBytes)}
	}
	return nil
}

// copyBody copies the body into f and h, counting progress, refusing more
// than limit bytes in all and resetting the stall timer on every read.
func (s *Store) copyBody(ctx context.Context, f *os.File, h hash.Hash, body io.Reader, t *transfer, off, total, limit int64, stall *time.Timer) (int64, error) {
	buf := make([]byte, 256<<10)
	var n int64
	for {
		k, rerr := body.Read(buf)
		if k > 0 {
			if stall != nil {
				stall.Reset(s.cfg.Download.StallTimeout)
			}
			if off+n+int64(k) > limit {
				s.removePartial(t.digest)
				return n, &permanent{fault.New(fault.TooLarge, "the file is over %d bytes (the manifest's size, or models.maxModelBytes)", limit)}
			}
			if _, err := f.Write(buf[:k]); err != nil {
				return n, &permanent{err} // write PATH: no space left on device
			}
			h.Write(buf[:k])
			n += int64(k)
			s.stats.bytes.Add(int64(k))
			if t.add(int64(k), time.Now()) {
				s.publishProgress(t)
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			if ctx.Err() != nil {
				return n, ctx.Err()
			}
			if stall != nil && !stall.Stop() {
				return n, fmt.Errorf("stalled: no bytes for %s at byte %d", s.cfg.Download.StallTimeout, off+n)
			}
			of := ""
			if total > 0 {
				of = fmt.Sprintf(" of %d", total)
			}
			return n, fmt.Errorf("the connection broke at byte %d%s: %w", off+n, of, rerr)
		}
	}
}

// openFile opens a file:// source at off.
func (s *Store) openFile(path string, off int64) (io.ReadCloser, int64, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, 0, &permanent{err}
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, 0, 0, &permanent{fmt.Errorf("%s is not a regular file", path)}
	}
	if off > st.Size() {
		off = 0
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		f.Close()
		return nil, 0, 0, err
	}
	return f, off, st.Size(), nil
}

// openHTTP sends the request, with Range (and If-Range, so a changed file
// is sent whole) when resuming at off. It returns the body, the offset
// the body starts at (0 when the server sends the whole file) and the
// file's total size (0 when unknown).
func (s *Store) openHTTP(ctx context.Context, t *transfer, off int64, ri resumeInfo) (io.ReadCloser, int64, int64, resumeInfo, error) {
	req, err := http.NewRequestWithContext(withRedirectPolicy(ctx, t.url), http.MethodGet, t.url, nil)
	if err != nil {
		return nil, 0, 0, ri, &permanent{err}
	}
	req.Header.Set("User-Agent", "ledge-models")
	if off > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-")
		switch {
		case ri.ETag != "" && !strings.HasPrefix(ri.ETag, "W/"):
			req.Header.Set("If-Range", ri.ETag)
		case ri.LastModified != "":
			req.Header.Set("If-Range", ri.LastModified)
		}
	}
	resp, err := s.client.Do(req)
	if err != nil {
		var p *permanent
		if errors.As(err, &p) {
			return nil, 0, 0, ri, p
		}
		if errors.Is(err, errInternalDial) {
			return nil, 0, 0, ri, &permanent{fmt.Errorf("GET %s: %w", redactString(t.url), unwrapURLError(err))}
		}
		return nil, 0, 0, ri, fmt.Errorf("GET %s: %w", redactString(t.url), unwrapURLError(err))
	}
	out := resumeInfo{ETag: resp.Header.Get("ETag"), LastModified: resp.Header.Get("Last-Modified")}
	switch resp.StatusCode {
	case http.StatusOK:
		out.Total = max(resp.ContentLength, 0)
		return resp.Body, 0, out.Total, out, nil
	case http.StatusPartialContent:
		start, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != off {
			resp.Body.Close()
			s.removePartial(t.digest)
			return nil, 0, 0, ri, fmt.Errorf("the server answered the range from %d with %q: starting over", off, resp.Header.Get("Content-Range"))
		}
		out.Total = total
		return resp.Body, off, total, out, nil
	case http.StatusRequestedRangeNotSatisfiable:
		resp.Body.Close()
		// The partial file may already be whole (the transfer broke
		// after the last byte): an empty body from off verifies it.
		if _, total, ok := parseContentRange(resp.Header.Get("Content-Range")); ok && total == off {
			out.Total = total
			return io.NopCloser(strings.NewReader("")), off, total, out, nil
		}
		s.removePartial(t.digest)
		return nil, 0, 0, ri, fmt.Errorf("the server refused the range from byte %d: starting over", off)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	err = fmt.Errorf("GET %s: %s", redactString(t.url), resp.Status)
	switch {
	case resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode >= 500:
		return nil, 0, 0, ri, err
	}
	return nil, 0, 0, ri, &permanent{err}
}

// parseContentRange reads "bytes START-END/TOTAL" (or "bytes */TOTAL");
// total is 0 when "*".
func parseContentRange(v string) (start, total int64, ok bool) {
	rest, found := strings.CutPrefix(strings.TrimSpace(v), "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, false
	}
	if tot != "*" {
		n, err := strconv.ParseInt(tot, 10, 64)
		if err != nil || n < 0 {
			return 0, 0, false
		}
		total = n
	}
	if rng == "*" {
		return 0, total, true
	}
	a, _, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	n, err := strconv.ParseInt(a, 10, 64)
	if err != nil || n < 0 {
		return 0, 0, false
	}
	return n, total, true
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
