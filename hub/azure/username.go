package azure

import (
	"fmt"
	"strings"
)

// Username is a parsed IoT Hub MQTT username:
// <host>/<deviceId>/[<moduleId>/]?api-version=<v>[&...].
type Username struct {
	Host, Device, Module string
	APIVersion           string
}

// ParseUsername parses the first two or three segments and the query;
// unknown query keys are ignored.
func ParseUsername(u string) (Username, error) {
	path, query, _ := strings.Cut(u, "?")
	parts := strings.Split(strings.TrimSuffix(path, "/"), "/")
	var out Username
	switch {
	case len(parts) == 2 && parts[0] != "" && parts[1] != "":
		out = Username{Host: parts[0], Device: parts[1]}
	case len(parts) == 3 && parts[0] != "" && parts[1] != "" && parts[2] != "":
		out = Username{Host: parts[0], Device: parts[1], Module: parts[2]}
	default:
		return Username{}, fmt.Errorf("username %q is not <host>/<deviceId>/[<moduleId>/]?api-version=<version>", u)
	}
	if query != "" {
		app, _, err := ParseBag(query)
		if err != nil {
			return Username{}, fmt.Errorf("username query: %w", err)
		}
		out.APIVersion = app["api-version"]
	}
	return out, nil
}
