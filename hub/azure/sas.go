package azure

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// SASPrefix starts every shared access signature token.
const SASPrefix = "SharedAccessSignature "

// Token is a parsed shared access signature: the fields exactly as sent
// (SR and Sig raw, still URL-encoded) plus the decoded values.
type Token struct {
	SR       string    // the sr field as sent (URL-encoded); the HMAC covers this text
	Resource string    // sr URL-decoded: host/devices/<d>[/modules/<m>]
	Sig      []byte    // the signature, URL- and base64-decoded
	Expiry   time.Time // se
	SE       string    // se as sent
	KeyName  string    // skn (policy name), "" for identity keys
}

// ParseToken parses "SharedAccessSignature sr=..&sig=..&se=..[&skn=..]";
// the fields may come in any order. Errors name the field at fault.
func ParseToken(s string) (*Token, error) {
	rest, ok := strings.CutPrefix(s, SASPrefix)
	if !ok {
		return nil, errors.New("sas token: does not start with \"SharedAccessSignature \"")
	}
	var t Token
	var haveSig bool
	for field := range strings.SplitSeq(rest, "&") {
		k, v, ok := strings.Cut(field, "=")
		if !ok {
			return nil, fmt.Errorf("sas token: field %q has no value", field)
		}
		switch k {
		case "sr":
			if t.SR != "" {
				return nil, errors.New("sas token: sr given twice")
			}
			res, err := url.QueryUnescape(v)
			if err != nil || v == "" {
				return nil, fmt.Errorf("sas token: sr %q is not URL-encoded text", v)
			}
			t.SR, t.Resource = v, res
		case "sig":
			if haveSig {
				return nil, errors.New("sas token: sig given twice")
			}
			raw, err := url.QueryUnescape(v)
			if err != nil {
				return nil, fmt.Errorf("sas token: sig is not URL-encoded: %v", err)
			}
			sig, err := base64.StdEncoding.DecodeString(raw)
			if err != nil || len(sig) == 0 {
				return nil, errors.New("sas token: sig is not base64")
			}
			t.Sig, haveSig = sig, true
		case "se":
			if t.SE != "" {
				return nil, errors.New("sas token: se given twice")
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("sas token: se %q is not seconds since the epoch", v)
			}
			t.SE, t.Expiry = v, time.Unix(n, 0)
		case "skn":
			t.KeyName = v
		default:
			// Unknown fields are ignored, as IoT Hub does.
		}
	}
	switch {
	case t.SR == "":
		return nil, errors.New("sas token: sr missing")
	case !haveSig:
		return nil, errors.New("sas token: sig missing")
	case t.SE == "":
		return nil, errors.New("sas token: se missing")
	}
	return &t, nil
}

// Audience is the identity a token's resource names.
type Audience struct {
	Host, Device, Module string
}

// ParseResource splits "host/devices/<d>[/modules/<m>]".
func ParseResource(res string) (Audience, error) {
	parts := strings.Split(strings.TrimSuffix(res, "/"), "/")
	switch {
	case len(parts) == 3 && strings.EqualFold(parts[1], "devices") && parts[0] != "" && parts[2] != "":
		return Audience{Host: parts[0], Device: parts[2]}, nil
	case len(parts) == 5 && strings.EqualFold(parts[1], "devices") && strings.EqualFold(parts[3], "modules") &&
		parts[0] != "" && parts[2] != "" && parts[4] != "":
		return Audience{Host: parts[0], Device: parts[2], Module: parts[4]}, nil
	}
	return Audience{}, fmt.Errorf("sas token: resource %q is not host/devices/<id>[/modules/<id>]", res)
}

// Sign computes the signature of sr (as it will be sent) and se with the
// base64 key.
func Sign(key []byte, sr, se string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(sr))
	m.Write([]byte{'\n'})
	m.Write([]byte(se))
	return m.Sum(nil)
}

// Verify reports whether the token is signed with one of keys (raw key
// bytes, base64-decoded); it checks the signature over the raw sr text,
// not the expiry or audience.
func (t *Token) Verify(keys ...[]byte) bool {
	for _, k := range keys {
		if len(k) == 0 {
			continue
		}
		if hmac.Equal(Sign(k, t.SR, t.SE), t.Sig) {
			return true
		}
	}
	return false
}

// BuildToken makes a token for resource (host/devices/<d>[/modules/<m>]),
// signed with the base64 key, valid until expiry.
func BuildToken(resource, base64Key string, expiry time.Time) (string, error) {
	key, err := base64.StdEncoding.DecodeString(base64Key)
	if err != nil {
		return "", fmt.Errorf("sas key: not base64: %w", err)
	}
	sr := url.QueryEscape(resource)
	se := strconv.FormatInt(expiry.Unix(), 10)
	sig := base64.StdEncoding.EncodeToString(Sign(key, sr, se))
	return SASPrefix + "sr=" + sr + "&sig=" + url.QueryEscape(sig) + "&se=" + se, nil
}

// Resource returns the token resource of a device or module identity.
func Resource(host, device, module string) string {
	if module == "" {
		return host + "/devices/" + device
	}
	return host + "/devices/" + device + "/modules/" + module
}
