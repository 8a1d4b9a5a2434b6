package azure

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Kind is what a client's PUBLISH topic asks for.
type Kind int

// The kinds of topics clients publish on.
const (
	Plain             Kind = iota // not an IoT Hub topic: plain MQTT
	Telemetry                     // devices/<d>[/modules/<m>]/messages/events[/<bag>]
	TwinGet                       // $iothub/twin/GET/?$rid=<rid>
	TwinPatchReported             // $iothub/twin/PATCH/properties/reported/?$rid=<rid>
	MethodResponse                // $iothub/methods/res/<status>/?$rid=<rid>
	IotHubOther                   // another $iothub/ topic: not supported
)

// Topic is a parsed client PUBLISH topic.
type Topic struct {
	Kind   Kind
	Device string // telemetry: the device id in the topic
	Module string // telemetry from a module
	Bag    string // telemetry: the property bag, still encoded
	RID    string // twin and method requests: the request id
	Status int    // method response status
}

// ErrTopic is returned (wrapped) for a malformed IoT Hub topic.
var ErrTopic = errors.New("malformed IoT Hub topic")

// ParseTopic classifies a PUBLISH topic. Plain topics are returned as
// Plain without error; a topic in the IoT Hub namespaces that does not fit
// its template is an error naming why.
func ParseTopic(t string) (Topic, error) {
	switch {
	case strings.HasPrefix(t, "devices/"):
		return parseTelemetry(t)
	case strings.HasPrefix(t, "$iothub/"):
		return parseIotHub(t)
	}
	return Topic{Kind: Plain}, nil
}

func parseTelemetry(t string) (Topic, error) {
	rest := t[len("devices/"):]
	dev, rest, ok := strings.Cut(rest, "/")
	if !ok || dev == "" {
		return Topic{Kind: Plain}, nil
	}
	var mod string
	if m, ok := strings.CutPrefix(rest, "modules/"); ok {
		mod, rest, ok = strings.Cut(m, "/")
		if !ok || mod == "" {
			return Topic{Kind: Plain}, nil
		}
	}
	rest, ok = strings.CutPrefix(rest, "messages/events")
	if !ok {
		return Topic{Kind: Plain}, nil // e.g. a module input or C2D topic: not publishable, ACL decides
	}
	if rest != "" {
		if rest[0] != '/' {
			return Topic{}, fmt.Errorf("%w: %q: text after messages/events must follow a /", ErrTopic, t)
		}
		rest = rest[1:]
	}
	// The Azure IoT SDKs end a module output's bag with a "/"
	// (".../messages/events/%24.on=out1&seq=1/"): a separator, not part of
	// the last value (a "/" in a value is sent as %2F).
	rest = strings.TrimSuffix(rest, "/")
	return Topic{Kind: Telemetry, Device: dev, Module: mod, Bag: rest}, nil
}

func parseIotHub(t string) (Topic, error) {
	path, query, _ := strings.Cut(t, "?")
	var tp Topic
	switch {
	case path == "$iothub/twin/GET/" || path == "$iothub/twin/GET":
		tp.Kind = TwinGet
	case path == "$iothub/twin/PATCH/properties/reported/" || path == "$iothub/twin/PATCH/properties/reported":
		tp.Kind = TwinPatchReported
	case strings.HasPrefix(path, "$iothub/methods/res/"):
		s := strings.TrimSuffix(path[len("$iothub/methods/res/"):], "/")
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > 999 {
			return Topic{}, fmt.Errorf("%w: %q: method status %q is not an integer status", ErrTopic, t, s)
		}
		tp.Kind, tp.Status = MethodResponse, n
	default:
		return Topic{Kind: IotHubOther}, nil
	}
	app, _, err := ParseBag(query)
	if err != nil {
		return Topic{}, fmt.Errorf("%w: %q: %v", ErrTopic, t, err)
	}
	tp.RID = app["$rid"]
	if tp.RID == "" {
		return Topic{}, fmt.Errorf("%w: %q: $rid missing", ErrTopic, t)
	}
	return tp, nil
}

// TwinResponseTopic is where the hub answers a twin request.
func TwinResponseTopic(status int, rid string, version int64) string {
	t := "$iothub/twin/res/" + strconv.Itoa(status) + "/?$rid=" + string(appendEscaped(nil, rid, false))
	if version > 0 {
		t += "&$version=" + strconv.FormatInt(version, 10)
	}
	return t
}

// DesiredPatchTopic carries a desired-properties patch.
func DesiredPatchTopic(version int64) string {
	return "$iothub/twin/PATCH/properties/desired/?$version=" + strconv.FormatInt(version, 10)
}

// MethodRequestTopic carries a direct method call.
func MethodRequestTopic(method, rid string) string {
	return "$iothub/methods/POST/" + method + "/?$rid=" + string(appendEscaped(nil, rid, false))
}

// C2DTopic carries a cloud-to-device message.
func C2DTopic(device string, app, sys map[string]string) string {
	b := []byte("devices/" + device + "/messages/devicebound/")
	return string(AppendBag(b, app, sys))
}

// InputTopic carries a routed message to a module input.
func InputTopic(device, module, input string, app, sys map[string]string) string {
	b := make([]byte, 0, 64+len(device)+len(module)+len(input))
	b = append(b, "devices/"...)
	b = append(b, device...)
	b = append(b, "/modules/"...)
	b = append(b, module...)
	b = append(b, "/inputs/"...)
	b = append(b, input...)
	b = append(b, '/')
	return string(AppendBag(b, app, sys))
}

// TelemetryTopic is the topic a device (module "") or module sends
// telemetry on, with its bag.
func TelemetryTopic(device, module string, app, sys map[string]string) string {
	b := []byte("devices/" + device)
	if module != "" {
		b = append(b, "/modules/"+module...)
	}
	b = append(b, "/messages/events/"...)
	return string(AppendBag(b, app, sys))
}
