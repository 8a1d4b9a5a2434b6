package route

import (
	"strings"
	"unicode/utf8"
)

// Message is what routes look at. The hub fills it from an MQTT publish (or a
// pipeline output) before calling Table.Match.
type Message struct {
	// Source is where the message comes from: "/messages" (leaf device
	// telemetry), "/messages/modules/<m>" (a module without an output),
	// "/messages/modules/<m>/outputs/<o>" or "/twinChangeNotifications".
	Source string
	Body   []byte
	// App holds application properties; lookups are case-insensitive.
	App map[string]string
	// Sys holds system properties under their condition names (messageId,
	// correlationId, userId, to, contentType, contentEncoding, messageSchema,
	// creationTime, enqueuedTime, connectionDeviceId, connectionModuleId,
	// outputName, inputName, connectionDeviceGenerationId,
	// connectionAuthMethod, absolute-expiry-time, dt-subject,
	// iothub-interface-id, modelId); lookups are case-insensitive.
	Sys map[string]string
}

// lookupFold finds key in m, exactly first and then case-insensitively (the
// property dictionaries of edgeHub are OrdinalIgnoreCase). When several keys
// fold to the same name, the lexically smallest one wins, so the answer does
// not depend on map iteration order.
func lookupFold(m map[string]string, key string) (string, bool) {
	if m == nil {
		return "", false
	}
	if v, ok := m[key]; ok {
		return v, true
	}
	// An ASCII key folds only to keys at least as long (the Kelvin sign
	// folds to k in three bytes), and to longer ones only if they are not
	// ASCII.
	asciiKey := isASCII(key)
	found, best, val := false, "", ""
	for k, v := range m {
		if asciiKey && (len(k) < len(key) || len(k) > len(key) && isASCII(k)) {
			continue
		}
		if strings.EqualFold(k, key) && (!found || k < best) {
			found, best, val = true, k, v
		}
	}
	return val, found
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// Sink is where a route sends messages: upstream (INTO $upstream) or a
// module input (INTO BrokeredEndpoint("/modules/<Module>/inputs/<Input>")).
type Sink struct {
	Upstream bool
	Module   string
	Input    string
}

// String returns "$upstream" or "/modules/<m>/inputs/<i>": a stable key for
// the sink's queues and endpoint. Module and input names keep their case.
func (s Sink) String() string {
	if s.Upstream {
		return "$upstream"
	}
	return "/modules/" + s.Module + "/inputs/" + s.Input
}
