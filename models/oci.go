package models

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"
	"oras.land/oras-go/v2/registry/remote/retry"

	"ledge/internal/fault"
)

// Models in OCI registries (Harbor, ACR, ECR, GHCR, docker-registry): a
// model is an artifact whose one layer is the ONNX file, with its labels
// and digest as annotations (and, when signed, the ed25519 signature of
// the digest), pushed by `ledge models push`. A model section names it
// oci://REGISTRY/REPO@sha256:<manifest digest> (or :TAG, resolved when the
// download starts) next to the file's sha256 as for https: the bytes are
// checked against it whatever the registry serves, and a broken transfer
// resumes with a range request.

// Media types of a ledge model artifact.
const (
	ArtifactType      = "application/vnd.ledge.model.v1"
	MediaTypeONNX     = "application/vnd.ledge.model.onnx"
	AnnotationSHA256  = "io.ledge.model.sha256"
	AnnotationLabels  = "io.ledge.model.labels"    // JSON array of class names
	AnnotationKind    = "io.ledge.model.kind"      // yolox, yolov8...
	AnnotationSig     = "io.ledge.model.signature" // base64 ed25519 over the digest
	AnnotationSigKey  = "io.ledge.model.keyId"
	annotationTitle   = ocispec.AnnotationTitle
	maxOCIManifestLen = 4 << 20
)

// RegistryAuth gives the credentials of a registry host ("" when none),
// from the deployment's registryCredentials.
type RegistryAuth func(host string) (username, password string)

// SetRegistryAuth sets where oci:// downloads find their credentials.
func (s *Store) SetRegistryAuth(f RegistryAuth) { s.regAuth.Store(&f) }

// tlsWithCA trusts the system's roots and the CA certificates of file.
func tlsWithCA(file string) (*tls.Config, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("models.caFile: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("models.caFile %s: no PEM certificate", file)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}, nil
}

// OCIRef is oci://host/repo@digest or oci://host/repo:tag.
type OCIRef struct {
	Host, Repo, Reference string
}

// ParseOCIRef reads an oci:// URL: oci://REGISTRY/REPO@sha256:<64 hex>
// or oci://REGISTRY/REPO:TAG, in the grammar of the distribution spec.
func ParseOCIRef(raw string) (OCIRef, error) {
	rest, ok := strings.CutPrefix(raw, "oci://")
	if !ok {
		return OCIRef{}, fmt.Errorf("%q is not an oci:// reference", raw)
	}
	ref, err := registry.ParseReference(rest)
	if err != nil || ref.Reference == "" {
		return OCIRef{}, fmt.Errorf("%q: want oci://REGISTRY/REPO@sha256:... or oci://REGISTRY/REPO:TAG", raw)
	}
	if strings.Contains(ref.Reference, ":") {
		d, err := digest.Parse(ref.Reference)
		if err != nil || d.Algorithm() != digest.SHA256 || "oci://"+ref.Registry+"/"+ref.Repository+"@"+ref.Reference != raw {
			return OCIRef{}, fmt.Errorf("%q: a digest is @sha256:<64 hex digits>", raw)
		}
	} else if "oci://"+ref.Registry+"/"+ref.Repository+":"+ref.Reference != raw {
		return OCIRef{}, fmt.Errorf("%q: want oci://REGISTRY/REPO:TAG", raw)
	}
	return OCIRef{Host: ref.Registry, Repo: ref.Repository, Reference: ref.Reference}, nil
}

func (r OCIRef) String() string {
	if strings.HasPrefix(r.Reference, "sha256:") {
		return "oci://" + r.Host + "/" + r.Repo + "@" + r.Reference
	}
	return "oci://" + r.Host + "/" + r.Repo + ":" + r.Reference
}

// OCIClient options: TLS for the registry, credentials, plain http.
type OCIClient struct {
	TLS       *tls.Config
	Username  string
	Password  string
	PlainHTTP bool
}

func (c OCIClient) repo(r OCIRef) (*remote.Repository, error) {
	repo, err := remote.NewRepository(r.Host + "/" + r.Repo)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if c.TLS != nil {
		tr.TLSClientConfig = c.TLS.Clone()
	}
	// The rules of https:// downloads: a redirect (registries send blobs
	// to object storage) stays on https and, from a registry outside,
	// does not reach loopback or link-local addresses (see
	// withRedirectPolicy, which the download's context carries).
	tr.DialContext = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, ControlContext: dialControl}).DialContext
	hc := &http.Client{Transport: retry.NewTransport(tr), CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if len(via) >= 10 {
			return &permanent{errors.New("more than 10 redirects")}
		}
		if req.URL.Scheme != "https" && !c.PlainHTTP {
			return &permanent{fmt.Errorf("redirected to %s: plain http is refused (the registry is https)", redact(req.URL))}
		}
		return checkRedirect(req)
	}}
	cli := &auth.Client{Client: hc, Cache: auth.NewCache()}
	if c.Username != "" {
		cli.Credential = auth.StaticCredential(r.Host, auth.Credential{Username: c.Username, Password: c.Password})
	}
	repo.Client = cli
	repo.PlainHTTP = c.PlainHTTP
	return repo, nil
}

// OCIModel is a model artifact as the registry describes it.
type OCIModel struct {
	// Ref is pinned to the manifest's digest.
	Ref    OCIRef
	Layer  ocispec.Descriptor
	SHA256 string
	Labels []string
	Kind   string
	// Signature and KeyID are the annotations of a signed model.
	Signature, KeyID string
}

// Resolve fetches the manifest r names (a tag is resolved to its digest)
// and finds the model layer.
func (c OCIClient) Resolve(ctx context.Context, r OCIRef) (*OCIModel, error) {
	repo, err := c.repo(r)
	if err != nil {
		return nil, err
	}
	desc, rc, err := repo.FetchReference(ctx, r.Reference)
	if err != nil {
		return nil, ociErr(r, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxOCIManifestLen+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxOCIManifestLen || desc.Digest != digest.FromBytes(data) {
		return nil, &permanent{fault.New(fault.Invalid, "%s: the manifest does not match its digest", r)}
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, &permanent{fmt.Errorf("%s: manifest: %v", r, err)}
	}
	out := &OCIModel{Ref: OCIRef{Host: r.Host, Repo: r.Repo, Reference: desc.Digest.String()}}
	for _, l := range m.Layers {
		if l.MediaType == MediaTypeONNX {
			out.Layer = l
			break
		}
	}
	if out.Layer.Digest == "" {
		return nil, &permanent{fault.New(fault.Invalid, "%s is not a ledge model (no layer of media type %s; push it with `ledge models push`)", r, MediaTypeONNX)}
	}
	if out.Layer.Digest.Algorithm() != digest.SHA256 {
		return nil, &permanent{fault.New(fault.Invalid, "%s: the model layer's digest is %s, want sha256", r, out.Layer.Digest.Algorithm())}
	}
	out.SHA256 = out.Layer.Digest.Encoded()
	a := m.Annotations
	if l := a[AnnotationLabels]; l != "" {
		json.Unmarshal([]byte(l), &out.Labels)
	}
	out.Kind, out.Signature, out.KeyID = a[AnnotationKind], a[AnnotationSig], a[AnnotationSigKey]
	return out, nil
}

func ociErr(r OCIRef, err error) error {
	var resp *errcode.ErrorResponse
	if errors.As(err, &resp) && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden) {
		return &permanent{fmt.Errorf("%s: the registry refused the credentials (%d %s): the deployment's registryCredentials need an entry with address %s and a user that may pull %s",
			r, resp.StatusCode, http.StatusText(resp.StatusCode), r.Host, r.Repo)}
	}
	var perm bool
	msg := err.Error()
	for _, s := range []string{"not found", "MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN", "invalid reference"} {
		if strings.Contains(msg, s) {
			perm = true
		}
	}
	err = fmt.Errorf("%s: %w", r, err)
	if perm {
		return &permanent{err}
	}
	return err
}

// client is the store's OCI client for a host: its TLS roots and the
// credentials of the current deployment.
func (s *Store) ociClient(host string) OCIClient {
	c := OCIClient{TLS: s.tlsConf}
	if f := s.regAuth.Load(); f != nil && *f != nil {
		c.Username, c.Password = (*f)(host)
	}
	return c
}

// openOCI opens the model layer of an oci:// source at offset off (a
// range request when the registry takes them, from 0 otherwise); total
// is the layer's size.
func (s *Store) openOCI(ctx context.Context, t *transfer, off int64) (io.ReadCloser, int64, int64, error) {
	r, err := ParseOCIRef(t.url)
	if err != nil {
		return nil, 0, 0, &permanent{err}
	}
	ctx = withRedirectPolicy(ctx, "https://"+r.Host+"/")
	c := s.ociClient(r.Host)
	m, err := c.Resolve(ctx, r)
	if err != nil {
		return nil, 0, 0, err
	}
	if m.SHA256 != t.digest {
		// Not what the section asks for: no byte of it is read.
		return nil, 0, 0, &permanent{fault.New(fault.Invalid, "%s: its model layer is not the sha256 the manifest says", r)}
	}
	repo, err := c.repo(m.Ref)
	if err != nil {
		return nil, 0, 0, &permanent{err}
	}
	if off > 0 && off <= m.Layer.Size {
		rc, start, err := fetchLayerFrom(ctx, repo, m, off)
		if err != nil {
			return nil, 0, 0, err
		}
		if rc != nil {
			return rc, start, m.Layer.Size, nil
		}
	}
	rc, err := repo.Blobs().Fetch(ctx, m.Layer)
	if err != nil {
		return nil, 0, 0, ociErr(m.Ref, err)
	}
	return rc, 0, m.Layer.Size, nil
}

// fetchLayerFrom asks for the model layer from byte off on with a range
// request (bytes=off-), as https downloads resume; start is where the
// body begins: off, or 0 when the registry ignored the range and sends
// the whole blob. oras's Fetch cannot resume: it GETs the whole blob and
// asks for the range only on Seek, so a resumed attempt had the registry
// send the blob from byte 0 again. A nil body and error mean the registry
// refused the request (401, 404, an unusable range): the caller fetches
// the whole blob with oras, whose errors say what the registry answered.
func fetchLayerFrom(ctx context.Context, repo *remote.Repository, m *OCIModel, off int64) (rc io.ReadCloser, start int64, err error) {
	if off == m.Layer.Size {
		// The partial file is whole (the transfer broke after its last
		// byte): nothing more to read, verify it.
		return io.NopCloser(strings.NewReader("")), off, nil
	}
	ref := repo.Reference
	ref.Reference = m.Layer.Digest.String()
	ctx = auth.AppendRepositoryScope(ctx, ref, auth.ActionPull)
	scheme := "https"
	if repo.PlainHTTP {
		scheme = "http"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+ref.Host()+"/v2/"+ref.Repository+"/blobs/"+ref.Reference, nil)
	if err != nil {
		return nil, 0, &permanent{err}
	}
	req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-")
	resp, err := repo.Client.Do(req)
	if err != nil {
		return nil, 0, ociErr(m.Ref, err)
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		first, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if ok && first == off && (total == 0 || total == m.Layer.Size) {
			return resp.Body, off, nil
		}
	case http.StatusOK:
		if resp.ContentLength == -1 || resp.ContentLength == m.Layer.Size {
			return resp.Body, 0, nil
		}
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout, http.StatusInternalServerError:
		resp.Body.Close()
		return nil, 0, fmt.Errorf("%s: the registry answered the range request with %s", m.Ref, resp.Status)
	}
	resp.Body.Close()
	return nil, 0, nil
}

// PushOptions describe a model pushed to a registry.
type PushOptions struct {
	Labels    []string
	Kind      string
	Signature *Signature
}

// PushOCI publishes file as a model artifact at ref (a tag) and returns
// the reference pinned to the manifest's digest and the file's sha256.
func (c OCIClient) PushOCI(ctx context.Context, file string, ref OCIRef, o PushOptions) (pinned OCIRef, sha string, err error) {
	if strings.HasPrefix(ref.Reference, "sha256:") {
		return OCIRef{}, "", errors.New("push to a tag (oci://REGISTRY/REPO:TAG): the digest is the registry's answer")
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return OCIRef{}, "", err
	}
	repo, err := c.repo(ref)
	if err != nil {
		return OCIRef{}, "", err
	}
	layer := ocispec.Descriptor{MediaType: MediaTypeONNX, Digest: digest.FromBytes(data), Size: int64(len(data)),
		Annotations: map[string]string{annotationTitle: filepath.Base(file)}}
	if err := pushBlob(ctx, repo, layer, data); err != nil {
		return OCIRef{}, "", err
	}
	ann := map[string]string{AnnotationSHA256: layer.Digest.Encoded(), ocispec.AnnotationCreated: "1970-01-01T00:00:00Z"}
	if len(o.Labels) > 0 {
		b, _ := json.Marshal(o.Labels)
		ann[AnnotationLabels] = string(b)
	}
	if o.Kind != "" {
		ann[AnnotationKind] = o.Kind
	}
	if o.Signature != nil {
		ann[AnnotationSig], ann[AnnotationSigKey] = o.Signature.Sig, o.Signature.KeyID
	}
	desc, err := oras.PackManifest(ctx, repo, oras.PackManifestVersion1_1, ArtifactType,
		oras.PackManifestOptions{Layers: []ocispec.Descriptor{layer}, ManifestAnnotations: ann})
	if err != nil {
		return OCIRef{}, "", fmt.Errorf("push %s: %w", ref, err)
	}
	if err := repo.Tag(ctx, desc, ref.Reference); err != nil {
		return OCIRef{}, "", fmt.Errorf("tag %s: %w", ref, err)
	}
	return OCIRef{Host: ref.Host, Repo: ref.Repo, Reference: desc.Digest.String()}, layer.Digest.Encoded(), nil
}

func pushBlob(ctx context.Context, repo *remote.Repository, d ocispec.Descriptor, data []byte) error {
	if ok, err := repo.Blobs().Exists(ctx, d); err == nil && ok {
		return nil
	}
	if err := repo.Blobs().Push(ctx, d, bytes.NewReader(data)); err != nil {
		return fmt.Errorf("push the model layer: %w", err)
	}
	return nil
}
