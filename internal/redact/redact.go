// Package redact removes secrets from URLs before they reach a log or an
// error message: the password of userinfo, and the query (which often
// carries SAS signatures or tokens). It is shared by the components that
// take URLs from users (pipeline sources and actions, model downloads,
// deployment sources).
package redact

import (
	"net/url"
	"strings"
)

// URL returns raw with the password of its userinfo replaced by "xxxxx"
// and its query by "...". Text that does not parse as a URL with a scheme
// is returned with anything that looks like userinfo masked.
//
// It errs on the side of hiding: whatever stands between a ':' and the last
// '@' after "scheme://" is masked, even where a strict URL parser would not
// call it userinfo (another program may).
func URL(raw string) string {
	masked := maskUserinfo(raw)
	u, err := url.Parse(masked)
	if err != nil || u.Scheme == "" || u.RawQuery == "" {
		return masked
	}
	u.RawQuery = "..."
	return u.String()
}

func maskUserinfo(s string) string {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return s
	}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		if c := strings.Index(rest[:at], ":"); c >= 0 {
			return scheme + "://" + rest[:c] + ":xxxxx" + rest[at:]
		}
	}
	return s
}
