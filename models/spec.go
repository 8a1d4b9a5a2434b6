package models

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"

	"ledge/internal/fault"
	"ledge/internal/yamlstrict"
)

// Spec is one model as a deployment manifest's models: section (or `ledge
// models pull`) describes it: where to fetch which bytes, and how to use
// them. A name@version is immutable: the same name and version with
// another digest is refused.
type Spec struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	// URL is https://, http:// (only with models.allowHTTP), file:/// or
	// oci://REGISTRY/REPO@sha256:... (or :TAG) of a model artifact (oci.go).
	URL string `json:"url"`
	// SHA256 is the file's digest, 64 lowercase hex digits.
	SHA256 string `json:"sha256"`
	// Size is the file's size in bytes, if the author gave it (0: unknown);
	// a transfer that disagrees fails early.
	Size int64 `json:"size,omitempty"`
	// Signature is an ed25519 signature over the digest, by one of the
	// trusted keys; nil when not signed.
	Signature *Signature `json:"signature,omitempty"`
	// Kind is the model family (auto, yolox, yolov8, yolov5, fastestdet...);
	// "" means auto.
	Kind string `json:"kind,omitempty"`
	// Labels are the class names, index = class id; nil: the model's own.
	Labels []string `json:"labels,omitempty"`
	// InputWidth and InputHeight set the network input size of a model
	// whose input is dynamic (0: from the model).
	InputWidth  int `json:"inputWidth,omitempty"`
	InputHeight int `json:"inputHeight,omitempty"`
}

// Ref is "name@version".
func (s *Spec) Ref() string { return s.Name + "@" + s.Version }

// Signature is a detached ed25519 signature over a model's digest: the 64
// lowercase hex digits of its sha256, as ASCII text. KeyID names the key
// (agent key ids: the first 8 bytes of the key's SHA-256, in hex); empty
// means "try every trusted key".
type Signature struct {
	KeyID string `json:"keyId,omitempty"`
	Sig   string `json:"sig"`
}

// Limits of what a manifest may say.
const (
	maxModels     = 256
	maxLabels     = 10000
	maxLabelLen   = 256
	maxInputSide  = 16384
	maxURLLen     = 4096
	maxSpecString = 1 << 16
)

// ParseSection reads a manifest's models section (canonical JSON, as the
// agent hands it on): a list of entries, or an object of name: entry. Each
// error names its place: "[1].sha256: ..." or "people.url: ...". A nil or
// null section is no models.
func ParseSection(raw json.RawMessage) ([]Spec, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var errs []error
	var out []Spec
	switch raw[0] {
	case '[':
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, fault.New(fault.Invalid, "want a list of models: %v", err)
		}
		if len(items) > maxModels {
			return nil, fault.New(fault.Invalid, "%d models: at most %d", len(items), maxModels)
		}
		for i, it := range items {
			s, err := parseEntry(it, "")
			if err != nil {
				errs = append(errs, prefixErr(yamlstrict.Index("", i), s.Name, err))
				continue
			}
			out = append(out, s)
		}
	case '{':
		keys, vals, err := objectFields(raw)
		if err != nil {
			return nil, fault.New(fault.Invalid, "want an object of name: model: %v", err)
		}
		if len(keys) > maxModels {
			return nil, fault.New(fault.Invalid, "%d models: at most %d", len(keys), maxModels)
		}
		for i, k := range keys {
			s, err := parseEntry(vals[i], k)
			if err != nil {
				errs = append(errs, prefixErr(k, "", err))
				continue
			}
			out = append(out, s)
		}
	default:
		return nil, fault.New(fault.Invalid, "want a list of models (or an object of name: model)")
	}
	seen := map[string]int{}
	for i, s := range out {
		if j, dup := seen[s.Name]; dup {
			errs = append(errs, fmt.Errorf("%s: model %q is listed twice (also entry %d): a deployment sets one version per name", s.Name, s.Name, j))
			continue
		}
		seen[s.Name] = i
	}
	if len(errs) > 0 {
		return nil, fault.Wrap(fault.Invalid, errors.Join(errs...))
	}
	return out, nil
}

// ParseSpec reads one model entry (the body of POST /api/v1/models).
func ParseSpec(raw []byte) (Spec, error) {
	s, err := parseEntry(raw, "")
	if err != nil {
		// parseEntry's ".field: ..." and ": ..." are for a place to go
		// before them; alone, the path starts at the field.
		var out []error
		for _, e := range unjoin(err) {
			msg := strings.TrimPrefix(e.Error(), ".")
			msg = strings.TrimPrefix(msg, ": ")
			out = append(out, errors.New(msg))
		}
		return Spec{}, fault.Wrap(fault.Invalid, errors.Join(out...))
	}
	return s, nil
}

func prefixErr(where, name string, err error) error {
	if name != "" {
		where += " (" + name + ")"
	}
	var out []error
	for _, e := range unjoin(err) {
		msg := e.Error()
		if strings.HasPrefix(msg, ".") || strings.HasPrefix(msg, ":") {
			out = append(out, errors.New(where+msg))
		} else {
			out = append(out, errors.New(where+": "+msg))
		}
	}
	return errors.Join(out...)
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// parseEntry reads one model object; name, when not "", is its key in an
// object section (a "name" field must then agree). Errors start with
// ".field: " so the caller can put the entry's place before them.
func parseEntry(raw []byte, name string) (Spec, error) {
	var s Spec
	keys, vals, err := objectFields(raw)
	if err != nil {
		return s, fmt.Errorf(": want an object {name, version, url, sha256, ...}: %v", err)
	}
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf(".%s: "+format, append([]any{field}, args...)...))
	}
	have := map[string]bool{}
	for i, k := range keys {
		v := vals[i]
		have[k] = true
		switch k {
		case "name":
			s.Name, err = str(v)
		case "version":
			s.Version, err = versionValue(v)
		case "url":
			s.URL, err = str(v)
		case "sha256":
			s.SHA256, err = str(v)
		case "size":
			s.Size, err = integer(v)
		case "signature":
			s.Signature, err = signatureValue(v)
		case "kind":
			s.Kind, err = str(v)
		case "labels":
			s.Labels, err = labelsValue(v)
		case "inputSize":
			s.InputWidth, s.InputHeight, err = inputSizeValue(v)
		default:
			err = fmt.Errorf("unknown key (want name, version, url, sha256, size, signature, kind, labels, inputSize)")
		}
		if err != nil {
			bad(k, "%v", err)
			err = nil
		}
	}
	if name != "" {
		if have["name"] && s.Name != name {
			bad("name", "%q differs from its key %q", s.Name, name)
		}
		s.Name = name
	}
	if !have["name"] && name == "" {
		bad("name", "is required")
	} else if why := ValidName(s.Name); why != "" && (have["name"] || name != "") {
		bad("name", "%s", why)
	}
	if !have["version"] {
		bad("version", "is required")
	} else if why := ValidVersion(s.Version); why != "" {
		bad("version", "%s", why)
	}
	if !have["url"] {
		bad("url", "is required")
	} else if err := checkURL(s.URL); err != nil {
		bad("url", "%v", err)
	}
	if !have["sha256"] {
		bad("sha256", "is required (the file's SHA-256: `sha256sum FILE`)")
	} else if d, err := normalizeDigest(s.SHA256); err != nil {
		bad("sha256", "%v", err)
	} else {
		s.SHA256 = d
	}
	if s.Size < 0 {
		bad("size", "must not be negative, got %d", s.Size)
	}
	if s.Kind != "" && (len(s.Kind) > 32 || strings.ContainsAny(s.Kind, " /\\\n\t")) {
		bad("kind", "%q is not a model kind", s.Kind)
	}
	s.Kind = strings.ToLower(s.Kind)
	return s, errors.Join(errs...)
}

// objectFields reads a JSON object's keys and raw values in order,
// refusing duplicate keys.
func objectFields(raw []byte) ([]string, []json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	t, err := dec.Token()
	if err != nil {
		return nil, nil, err
	}
	if d, ok := t.(json.Delim); !ok || d != '{' {
		return nil, nil, fmt.Errorf("got %s", describe(t))
	}
	var keys []string
	var vals []json.RawMessage
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, nil, err
		}
		k, _ := t.(string)
		if seen[k] {
			return nil, nil, fmt.Errorf("key %q given twice", k)
		}
		seen[k] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, fmt.Errorf("%s: %v", k, err)
		}
		keys = append(keys, k)
		vals = append(vals, v)
	}
	if _, err := dec.Token(); err != nil {
		return nil, nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, nil, errors.New("more than one JSON value")
	}
	return keys, vals, nil
}

func describe(t json.Token) string {
	switch v := t.(type) {
	case json.Delim:
		if v == '[' {
			return "a list"
		}
		return string(v)
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%v", t)
}

func kindOf(v json.RawMessage) string {
	v = bytes.TrimSpace(v)
	if len(v) == 0 {
		return "nothing"
	}
	switch v[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "a list"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

func str(v json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", fmt.Errorf("want a string, got %s", kindOf(v))
	}
	if len(s) > maxSpecString {
		return "", fmt.Errorf("longer than %d bytes", maxSpecString)
	}
	return s, nil
}

// versionValue takes a string, or a whole number written without quotes
// (YAML `version: 3`).
func versionValue(v json.RawMessage) (string, error) {
	if kindOf(v) == "a number" {
		n := strings.TrimSpace(string(v))
		if _, err := strconv.ParseUint(n, 10, 63); err != nil {
			return "", fmt.Errorf("%s: write a version that is not a whole number in quotes (\"%s\")", n, n)
		}
		return n, nil
	}
	return str(v)
}

func integer(v json.RawMessage) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("want a whole number, got %s", strings.TrimSpace(string(v)))
	}
	return n, nil
}

func labelsValue(v json.RawMessage) ([]string, error) {
	var ls []json.RawMessage
	if err := json.Unmarshal(v, &ls); err != nil {
		return nil, fmt.Errorf("want a list of class names, got %s", kindOf(v))
	}
	if len(ls) > maxLabels {
		return nil, fmt.Errorf("%d labels: at most %d", len(ls), maxLabels)
	}
	out := make([]string, len(ls))
	for i, l := range ls {
		s, err := str(l)
		if err != nil {
			return nil, fmt.Errorf("[%d]: %v", i, err)
		}
		s = strings.TrimSpace(s)
		switch {
		case s == "":
			return nil, fmt.Errorf("[%d]: empty class name", i)
		case len(s) > maxLabelLen:
			return nil, fmt.Errorf("[%d]: longer than %d bytes", i, maxLabelLen)
		case strings.ContainsAny(s, "\n\r\x00"):
			return nil, fmt.Errorf("[%d]: a class name is one line", i)
		}
		out[i] = s
	}
	return out, nil
}

// inputSizeValue takes "WxH", or a whole number N for NxN.
func inputSizeValue(v json.RawMessage) (int, int, error) {
	var w, h int64
	if kindOf(v) == "a number" {
		n, err := integer(v)
		if err != nil {
			return 0, 0, err
		}
		w, h = n, n
	} else {
		s, err := str(v)
		if err != nil {
			return 0, 0, fmt.Errorf("want \"WIDTHxHEIGHT\" (e.g. \"640x640\") or one number, got %s", kindOf(v))
		}
		ws, hs, ok := strings.Cut(strings.ToLower(strings.TrimSpace(s)), "x")
		if !ok {
			return 0, 0, fmt.Errorf("%q: want \"WIDTHxHEIGHT\", e.g. \"640x640\"", s)
		}
		if w, err = strconv.ParseInt(ws, 10, 32); err != nil {
			return 0, 0, fmt.Errorf("%q: width is not a whole number", s)
		}
		if h, err = strconv.ParseInt(hs, 10, 32); err != nil {
			return 0, 0, fmt.Errorf("%q: height is not a whole number", s)
		}
	}
	if w < 1 || h < 1 || w > maxInputSide || h > maxInputSide {
		return 0, 0, fmt.Errorf("%dx%d: each side from 1 to %d", w, h, maxInputSide)
	}
	return int(w), int(h), nil
}

// signatureValue takes the base64 signature, or {keyId, sig} (with an
// optional "alg": "ed25519", the shape of a manifest's .sig file).
func signatureValue(v json.RawMessage) (*Signature, error) {
	var sig Signature
	switch kindOf(v) {
	case "a string":
		s, err := str(v)
		if err != nil {
			return nil, err
		}
		sig.Sig = s
	case "an object":
		keys, vals, err := objectFields(v)
		if err != nil {
			return nil, err
		}
		for i, k := range keys {
			s, err := str(vals[i])
			if err != nil {
				return nil, fmt.Errorf("%s: %v", k, err)
			}
			switch k {
			case "alg":
				if s != "ed25519" {
					return nil, fmt.Errorf("alg: %q is not supported: want ed25519", s)
				}
			case "keyId":
				sig.KeyID = s
			case "sig":
				sig.Sig = s
			default:
				return nil, fmt.Errorf("%s: unknown key (want alg, keyId, sig)", k)
			}
		}
	default:
		return nil, fmt.Errorf("want the base64 signature or {keyId, sig}, got %s", kindOf(v))
	}
	raw, err := base64.StdEncoding.DecodeString(sig.Sig)
	if err != nil || len(raw) != 64 {
		return nil, errors.New("sig: want the base64 of a 64-byte ed25519 signature")
	}
	if sig.KeyID != "" {
		if b, err := hex.DecodeString(sig.KeyID); err != nil || len(b) != 8 {
			return nil, fmt.Errorf("keyId: %q is not a key id (16 hex digits, as `ledge keys gen` prints)", sig.KeyID)
		}
	}
	return &sig, nil
}

// normalizeDigest accepts 64 hex digits, optionally prefixed "sha256:",
// and returns them in lower case.
func normalizeDigest(d string) (string, error) {
	d = strings.TrimPrefix(strings.TrimSpace(d), "sha256:")
	if len(d) != 64 {
		return "", fmt.Errorf("want 64 hex digits (the file's SHA-256), got %d characters", len(d))
	}
	if _, err := hex.DecodeString(d); err != nil {
		return "", errors.New("want 64 hex digits (the file's SHA-256)")
	}
	return strings.ToLower(d), nil
}

// checkURL accepts https://, http:// and file:/// URLs (whether http is
// allowed is the store's decision).
func checkURL(raw string) error {
	if raw == "" {
		return errors.New("is empty")
	}
	if len(raw) > maxURLLen {
		return fmt.Errorf("longer than %d bytes", maxURLLen)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("not a URL: %v", err)
	}
	switch u.Scheme {
	case "https", "http":
		if u.Host == "" {
			return fmt.Errorf("%q has no host", raw)
		}
		if u.User != nil {
			return errors.New("credentials in the URL are not allowed (they would show in the reported state)")
		}
	case "oci":
		if _, err := ParseOCIRef(raw); err != nil {
			return err
		}
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return fmt.Errorf("%q: a file URL names a local file: file:///path", raw)
		}
		if !filepath.IsAbs(u.Path) {
			return fmt.Errorf("%q: want an absolute path: file:///path", raw)
		}
	default:
		return fmt.Errorf("scheme %q is not supported: want https://, http://, file:/// or oci://", u.Scheme)
	}
	return nil
}
