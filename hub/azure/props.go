package azure

import (
	"fmt"
	"net/url"
	"sort"
	"strings"
)

// System property names as routes and the Go API see them (reference
// §3.3), keyed by their wire names in property bags (§4.4, §4.5).
var wireToSys = map[string]string{
	"$.mid":              "messageId",
	"$.cid":              "correlationId",
	"$.uid":              "userId",
	"$.to":               "to",
	"$.exp":              "absolute-expiry-time",
	"$.ct":               "contentType",
	"$.ce":               "contentEncoding",
	"$.on":               "outputName",
	"$.schema":           "messageSchema",
	"$.ctime":            "creationTime",
	"$.ifid":             "iothub-interface-id",
	"$.sub":              "dt-subject",
	"$.cdid":             "connectionDeviceId",
	"$.cmid":             "connectionModuleId",
	"$.mdid":             "modelId",
	"iothub-operation":   "iothub-operation",
	"iothub-messagetype": "iothub-MessageType",
}

var sysToWire = func() map[string]string {
	m := make(map[string]string, len(wireToSys))
	for w, s := range wireToSys {
		m[strings.ToLower(s)] = w
	}
	return m
}()

// sysOrder is the order system properties are written in bags.
var sysOrder = []string{"$.mid", "$.cid", "$.uid", "$.to", "$.exp", "$.ct", "$.ce", "$.on", "$.schema", "$.ctime",
	"$.ifid", "$.sub", "$.cdid", "$.cmid", "$.mdid", "iothub-operation", "iothub-messagetype"}

// WireName returns the bag key of a system property name ("messageId" ->
// "$.mid"), or "" when it has none.
func WireName(sys string) string { return sysToWire[strings.ToLower(sys)] }

// BagError is a malformed property bag, with the byte offset of the bad
// pair in the bag.
type BagError struct {
	Offset int
	Msg    string
}

func (e *BagError) Error() string { return fmt.Sprintf("property bag at byte %d: %s", e.Offset, e.Msg) }

// ParseBag decodes a URL-encoded property bag ("k1=v1&k2=v2", optionally
// starting with "?"). Keys with a known $.-name (the $ may arrive as %24)
// go into sys under their system property name; every other key is an
// application property. A key without "=" has an empty value. Either map
// may be nil when nothing went into it.
func ParseBag(bag string) (app, sys map[string]string, err error) {
	off := 0
	if strings.HasPrefix(bag, "?") {
		bag, off = bag[1:], 1
	}
	for len(bag) > 0 {
		pair := bag
		next := len(bag)
		if i := strings.IndexByte(bag, '&'); i >= 0 {
			pair, next = bag[:i], i+1
		}
		if pair != "" {
			k, v, _ := strings.Cut(pair, "=")
			key, kerr := unescape(k)
			val, verr := unescape(v)
			switch {
			case kerr != nil || verr != nil:
				return nil, nil, &BagError{off, fmt.Sprintf("bad URL escape in %q", pair)}
			case key == "":
				return nil, nil, &BagError{off, "empty key"}
			}
			if s, ok := wireToSys[strings.ToLower(key)]; ok {
				if sys == nil {
					sys = make(map[string]string, 4)
				}
				sys[s] = val
			} else {
				if app == nil {
					app = make(map[string]string, 4)
				}
				app[key] = val
			}
		}
		bag, off = bag[next:], off+next
	}
	return app, sys, nil
}

func unescape(s string) (string, error) {
	if strings.IndexByte(s, '%') < 0 && strings.IndexByte(s, '+') < 0 {
		return s, nil
	}
	return url.QueryUnescape(s)
}

// AppendBag appends the URL-encoded bag of sys (system property names, as
// in ParseBag) and app to dst: system properties first in a fixed order,
// then application properties sorted by key. System properties without a
// wire name are left out.
func AppendBag(dst []byte, app, sys map[string]string) []byte {
	first := true
	add := func(k, v string) {
		if !first {
			dst = append(dst, '&')
		}
		first = false
		dst = appendEscaped(dst, k, true)
		dst = append(dst, '=')
		dst = appendEscaped(dst, v, false)
	}
	if len(sys) > 0 {
		wire := make(map[string]string, len(sys))
		for k, v := range sys {
			if w := WireName(k); w != "" {
				wire[w] = v
			}
		}
		for _, w := range sysOrder {
			if v, ok := wire[w]; ok {
				add(w, v)
			}
		}
	}
	if len(app) > 0 {
		keys := make([]string, 0, len(app))
		for k := range app {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			add(k, app[k])
		}
	}
	return dst
}

// appendEscaped percent-encodes all but unreserved characters (and "$"
// in keys, which SDKs expect literally in "$.mid").
func appendEscaped(dst []byte, s string, key bool) []byte {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == '~':
			dst = append(dst, c)
		case c == '$' && key:
			dst = append(dst, c)
		default:
			dst = append(dst, '%', hex[c>>4], hex[c&15])
		}
	}
	return dst
}
