package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ledge/internal/testenv"
)

// mqttJS runs a scenario of testdata/mqttjs/conformance.js (stock MQTT.js
// 5, installed there by make deps) against a broker on port and returns
// what the client saw. The same script runs against mosquitto by hand:
// `node conformance.js PORT SCENARIO`.
func mqttJS(t *testing.T, port int, scenario string, env ...string) map[string]any {
	t.Helper()
	dir, _ := filepath.Abs(filepath.Join("testdata", "mqttjs"))
	testenv.NodePackages(t, dir, "mqtt")
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "conformance.js", fmt.Sprint(port), scenario)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	var res map[string]any
	for _, l := range strings.Split(string(out), "\n") {
		if j, ok := strings.CutPrefix(l, "RESULT "); ok {
			if err := json.Unmarshal([]byte(j), &res); err != nil {
				t.Fatalf("%s: %v in %q", scenario, err, j)
			}
		}
	}
	if err != nil || res == nil || res["fail"] != nil {
		t.Fatalf("MQTT.js %s: %v\n%s", scenario, err, out)
	}
	return res
}

func js(v any) string { b, _ := json.Marshal(v); return string(b) }

// TestPacketIDSpacesMQTTJS: one MQTT.js client publishes to a topic it is
// subscribed to, many publishes outstanding, and subscribes now and then:
// its packet ids and the hub's overlap all the time, and they are
// independent (MQTT-2.2.1). The hub used to keep both in one map: a
// client's publish with id N dropped the hub's delivery N from flight, its
// PUBACK then matched nothing and the client's Receive Maximum quota was
// lost (20 of 300 messages arrived), QoS 2 flows crossed (the connection
// was closed), and a SUBSCRIBE with an id the hub used got 0x91.
func TestPacketIDSpacesMQTTJS(t *testing.T) {
	h := startHub(t, nil, true)
	for _, qos := range []string{"1", "2"} {
		t.Run("qos"+qos, func(t *testing.T) {
			r := mqttJS(t, h.Ports().MQTT, "bidi", "QOS="+qos)
			if r["received"] != r["sent"] || r["distinct"] != r["sent"] || len(r["errors"].([]any)) > 0 || r["connected"] != true {
				t.Errorf("got %s, want every message once, no error, still connected", js(r))
			}
		})
	}
}

// TestReceiveMaximumMQTTJS: a subscriber with Receive Maximum 2 gets a
// burst of 50 QoS 1 messages: never more than 2 unacknowledged, all of
// them, in order. A message held back for the quota used to leave the
// flight when sent, so its PUBACK gave no quota back: 4 of 50 arrived.
func TestReceiveMaximumMQTTJS(t *testing.T) {
	h := startHub(t, nil, true)
	for _, qos := range []string{"1", "2"} {
		t.Run("qos"+qos, func(t *testing.T) {
			r := mqttJS(t, h.Ports().MQTT, "receiveMaximum", "QOS="+qos)
			if r["received"] != r["sent"] || r["inOrder"] != true || r["mostUnacked"].(float64) > 2 {
				t.Errorf("got %s, want all 50 in order, at most 2 unacknowledged", js(r))
			}
		})
	}
}

// TestReconnectUnderLoadMQTTJS: a persistent MQTT.js subscriber loses its
// connection eight times while a publisher streams 2,000 QoS 1 messages
// (3.1.1 and 5): every message arrives, and in publish order. A message
// published while the session moved to the new connection went into the
// old connection's queue after it was copied and was lost, and messages
// published during the resend of the queue overtook it (mosquitto keeps
// both).
func TestReconnectUnderLoadMQTTJS(t *testing.T) {
	h := startHub(t, nil, true)
	for _, v := range []string{"4", "5"} {
		t.Run("v"+v, func(t *testing.T) {
			t.Parallel()
			r := mqttJS(t, h.Ports().MQTT, "reconnectUnderLoad", "V="+v)
			if r["missing"] != 0.0 || r["outOfOrder"] != 0.0 {
				t.Errorf("got %s, want none missing and none out of order", js(r))
			}
		})
	}
}

// TestMaximumPacketSizeMQTTJS: a persistent subscriber announcing a
// Maximum Packet Size of 200 bytes. A message over it is never sent and
// the ones after it arrive [MQTT-3.1.2-25]; a bigger one queued while the
// client is away does not stop the session from resuming. It used to stay
// in flight, and every reconnect failed writing it.
func TestMaximumPacketSizeMQTTJS(t *testing.T) {
	h := startHub(t, nil, true)
	r := mqttJS(t, h.Ports().MQTT, "maxPacketSize")
	if js(r["live"]) != `["small1","small2"]` || js(r["back"]) != `["small3"]` || r["connectedAfterReconnect"] != true {
		t.Errorf("got %s, want small1, small2 live and small3 after the reconnect", js(r))
	}
}

// TestTopicAliasesMQTTJS: the hub announces its Topic Alias Maximum, so
// MQTT.js may publish with aliases; it sends none itself (as mosquitto),
// so a persistent subscriber that accepts aliases gets the messages queued
// while it was away with their topics. They used to be queued with an
// alias the next connection never registered: MQTT.js failed with
// "Received unregistered Topic Alias" at every reconnect.
func TestTopicAliasesMQTTJS(t *testing.T) {
	h := startHub(t, nil, true)
	port := h.Ports().MQTT
	r := mqttJS(t, port, "connack")
	props := r["props"].(map[string]any)
	if props["topicAliasMaximum"] != 10.0 || props["maximumPacketSize"] == nil {
		t.Errorf("CONNACK properties %s, want topicAliasMaximum 10 and the maximum packet size", js(props))
	}
	if r["first"] != "ok" || r["second"] != "ok" || len(r["got"].([]any)) != 2 {
		t.Errorf("publishing with a topic alias: %s", js(r))
	}
	r = mqttJS(t, port, "aliasPersistent")
	back := r["back"].([]any)
	if len(back) != 3 || r["connected"] != true || len(r["errors"].([]any)) > 0 {
		t.Fatalf("got %s, want the 3 messages queued while away", js(r))
	}
	for _, m := range back {
		if m.([]any)[0] == "" {
			t.Errorf("message without its topic: %s", js(r))
		}
	}
}

// TestTopicAliasACLMQTTJS: a publish by topic alias alone is checked
// against the ACL with the topic the alias stands for. It was checked with
// an empty topic: a user whose rules grant only some topics got "not
// authorized" for every publish by alias.
func TestTopicAliasACLMQTTJS(t *testing.T) {
	h := startHub(t, func(c *Config) {
		c.ACL = []ACLRule{{Kinds: []string{KindUser}, Publish: []string{"alias-in/#"}, Subscribe: []string{"alias-in/#"}}}
	}, false)
	h.addIdentity(t, IdentitySpec{Name: "aliaser", Kind: KindUser, Password: "s3cret"})
	r := mqttJS(t, h.Ports().MQTT, "connack", "MQTT_USER=aliaser", "MQTT_PASS=s3cret")
	if r["first"] != "ok" || r["second"] != "ok" || len(r["got"].([]any)) != 2 {
		t.Errorf("publishing with a topic alias under an ACL: %s, want both acknowledged and delivered", js(r))
	}
}

// TestWillPropertiesMQTTJS: a Will is published with its properties
// (content type, response topic, correlation data, payload format, its own
// expiry, user properties), and a Will Delay does not hold back the Will
// of a session that ends with the connection (expiry 0) [MQTT-3.1.3-9].
// Only the user properties used to go out, with an expiry of 86400 added.
func TestWillPropertiesMQTTJS(t *testing.T) {
	h := startHub(t, nil, true)
	r := mqttJS(t, h.Ports().MQTT, "will")
	got := r["got"].(map[string]any)
	want := `{"contentType":"text/x","correlationData":"cd","messageExpiryInterval":50,"payloadFormatIndicator":true,"responseTopic":"reply/here","userProperties":{"u":"v"}}`
	if js(got["props"]) != want {
		t.Errorf("will properties %s, want %s", js(got["props"]), want)
	}
	if _, ok := got["delay-no-session"]; !ok {
		t.Errorf("the delayed Will of a session with expiry 0 was not published when the connection dropped: %s", js(got))
	}
}

// TestMessageExpiryMQTTJS: queued for a session that is away, a message
// whose expiry passed is not delivered, one with an expiry has it counted
// down, and one without gets none (it used to get 86400, the hub's
// maximum, which MQTT 5 §3.3.2.3.3 does not allow).
func TestMessageExpiryMQTTJS(t *testing.T) {
	h := startHub(t, nil, true)
	r := mqttJS(t, h.Ports().MQTT, "expiry")
	got := r["got"].([]any)
	if len(got) != 2 {
		t.Fatalf("got %s, want long and none", js(r))
	}
	long, none := got[0].([]any), got[1].([]any)
	if long[0] != "long" || long[1].(float64) > 98 || long[1].(float64) < 90 || none[0] != "none" || none[1] != nil {
		t.Errorf("got %s, want [long, ~97] and [none, no expiry]", js(r))
	}
}

// TestSysPublishMQTTJS: a QoS 1 publish to $SYS is refused like one the
// ACL refuses: MQTT 5 gets PUBACK 0x87, 3.1.1 is disconnected. It used to
// get no PUBACK at all, which stalls the client's flow.
func TestSysPublishMQTTJS(t *testing.T) {
	h := startHub(t, nil, true)
	r := mqttJS(t, h.Ports().MQTT, "sysPublish")
	if !strings.Contains(fmt.Sprint(r["v5"]), "Not authorized") || r["v5Connected"] != true {
		t.Errorf("MQTT 5: %s, want PUBACK not authorized and still connected", js(r))
	}
	if r["v3"] == "no PUBACK" && r["v3Connected"] == true {
		t.Errorf("MQTT 3.1.1: %s, want a disconnect (no negative PUBACK in 3.1.1), not silence", js(r))
	}
}

// TestRetainedWildcardsMQTTJS: retained messages for a new subscription
// follow the topic matching rules: "r/#" has "r" itself, and "+" and "#"
// never match a topic starting with "$" [MQTT-4.7.2-1].
func TestRetainedWildcardsMQTTJS(t *testing.T) {
	h := startHub(t, nil, true)
	r := mqttJS(t, h.Ports().MQTT, "retainedWildcards")
	want := `{"#":["R","R/a","R/a/b"],"+":["R"],"R/#":["R","R/a","R/a/b"],"R/a/#":["R/a","R/a/b"]}`
	if js(r) != want {
		t.Errorf("retained messages per filter %s, want %s", js(r), want)
	}
}

// TestSubscriptionIdentifierMQTTJS: a retained message sent for a new
// subscription carries its Subscription Identifier, as live ones do; it
// used to come without.
func TestSubscriptionIdentifierMQTTJS(t *testing.T) {
	h := startHub(t, nil, true)
	r := mqttJS(t, h.Ports().MQTT, "subscriptionIdentifier")
	if js(r["got"]) != `[["retained",7],["live",7]]` {
		t.Errorf("got %s, want both with subscription identifier 7", js(r["got"]))
	}
}

// TestSharedNoLocalMQTTJS: No Local on a shared subscription is a
// Protocol Error [MQTT-3.8.3-4]: DISCONNECT 0x82 with a reason string. The
// hub used to answer SUBACK 0x82, which is not a SUBACK reason code:
// MQTT.js never completed the subscribe.
func TestSharedNoLocalMQTTJS(t *testing.T) {
	h := startHub(t, nil, true)
	r := mqttJS(t, h.Ports().MQTT, "sharedNoLocal")
	d, _ := r["disconnect"].(map[string]any)
	if d == nil || d["reasonCode"] != float64(0x82) {
		t.Errorf("got %s, want DISCONNECT 0x82", js(r))
	}
}
