package azure

import (
	"encoding/base64"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

const testKey = "c2VjcmV0LWtleS1mb3ItdGVzdHMtMDEyMzQ1Njc4OWFiY2RlZg=="

func TestTokenRoundTrip(t *testing.T) {
	exp := time.Unix(2000000000, 0)
	tok, err := BuildToken("hub.example/devices/dev1", testKey, exp)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParseToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := base64.StdEncoding.DecodeString(testKey)
	if !p.Verify([]byte("wrong"), key) {
		t.Error("token does not verify with its key (as the second key)")
	}
	if p.Verify([]byte("wrong")) {
		t.Error("token verifies with a wrong key")
	}
	if !p.Expiry.Equal(exp) || p.Resource != "hub.example/devices/dev1" {
		t.Errorf("got %+v", p)
	}
}

// The HMAC covers sr exactly as sent: a token whose sr uses lower-case
// escapes (as the Node SDK may send) verifies only against that text.
func TestTokenRawSR(t *testing.T) {
	key, _ := base64.StdEncoding.DecodeString(testKey)
	sr := "hub.example%2fdevices%2fdev1"
	se := "2000000000"
	sig := base64.StdEncoding.EncodeToString(Sign(key, sr, se))
	tok := "SharedAccessSignature se=" + se + "&sig=" + url.QueryEscape(sig) + "&sr=" + sr
	p, err := ParseToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Verify(key) {
		t.Error("lower-case escaped sr does not verify")
	}
	upper := strings.Replace(tok, "%2f", "%2F", -1)
	if p2, _ := ParseToken(upper); p2.Verify(key) {
		t.Error("re-encoded sr verifies: HMAC not over the raw text")
	}
	aud, err := ParseResource(p.Resource)
	if err != nil || aud != (Audience{Host: "hub.example", Device: "dev1"}) {
		t.Errorf("audience %+v %v", aud, err)
	}
}

func TestParseTokenErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"sr=a&sig=b&se=1", "does not start"},
		{"SharedAccessSignature sig=YQ%3D%3D&se=1", "sr missing"},
		{"SharedAccessSignature sr=a&se=1", "sig missing"},
		{"SharedAccessSignature sr=a&sig=YQ%3D%3D", "se missing"},
		{"SharedAccessSignature sr=a&sig=YQ%3D%3D&se=soon", "se \"soon\""},
		{"SharedAccessSignature sr=a&sig=!!&se=1", "not base64"},
		{"SharedAccessSignature sr=a&sig", "has no value"},
		{"SharedAccessSignature sr=a&sr=b&sig=YQ%3D%3D&se=1", "twice"},
	} {
		_, err := ParseToken(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.in, err, tc.want)
		}
	}
}

func TestParseResource(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Audience
		ok   bool
	}{
		{"h/devices/d", Audience{"h", "d", ""}, true},
		{"h/devices/d/modules/m", Audience{"h", "d", "m"}, true},
		{"h/DEVICES/d/Modules/m/", Audience{"h", "d", "m"}, true},
		{"h/devices/", Audience{}, false},
		{"h/things/d", Audience{}, false},
		{"h/devices/d/modules", Audience{}, false},
	} {
		got, err := ParseResource(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("%q: %+v %v", tc.in, got, err)
		}
	}
}

func TestParseBag(t *testing.T) {
	for _, tc := range []struct {
		in       string
		app, sys map[string]string
		err      string
	}{
		{"", nil, nil, ""},
		{"?a=1&b=two%20words", map[string]string{"a": "1", "b": "two words"}, nil, ""},
		{"$.mid=m1&%24.ct=application%2Fjson&$.ce=utf-8&k", map[string]string{"k": ""},
			map[string]string{"messageId": "m1", "contentType": "application/json", "contentEncoding": "utf-8"}, ""},
		{"$.on=out1&x=", map[string]string{"x": ""}, map[string]string{"outputName": "out1"}, ""},
		{"a=1&&b=2", map[string]string{"a": "1", "b": "2"}, nil, ""},
		{"a=%zz", nil, nil, "byte 0"},
		{"a=1&=2", nil, nil, "byte 4: empty key"},
	} {
		app, sys, err := ParseBag(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(app, tc.app) || !reflect.DeepEqual(sys, tc.sys) {
			t.Errorf("%q: %v %v %v", tc.in, app, sys, err)
		}
	}
}

func TestBagRoundTrip(t *testing.T) {
	app := map[string]string{"temp alert": "a&b=c", "z": "ü"}
	sys := map[string]string{"messageId": "m/1", "connectionDeviceId": "d1", "notASysProp": "x"}
	bag := string(AppendBag(nil, app, sys))
	if !strings.HasPrefix(bag, "$.mid=m%2F1&$.cdid=d1&") {
		t.Errorf("bag %q", bag)
	}
	gotApp, gotSys, err := ParseBag(bag)
	if err != nil || !reflect.DeepEqual(gotApp, app) || gotSys["messageId"] != "m/1" || gotSys["connectionDeviceId"] != "d1" || len(gotSys) != 2 {
		t.Errorf("%q -> %v %v %v", bag, gotApp, gotSys, err)
	}
}

func TestParseTopic(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Topic
		err  bool
	}{
		{"sensors/t1", Topic{Kind: Plain}, false},
		{"devices/d1/messages/events/", Topic{Kind: Telemetry, Device: "d1"}, false},
		{"devices/d1/messages/events", Topic{Kind: Telemetry, Device: "d1"}, false},
		{"devices/d1/messages/events/a=1", Topic{Kind: Telemetry, Device: "d1", Bag: "a=1"}, false},
		{"devices/d1/modules/m1/messages/events/$.on=o", Topic{Kind: Telemetry, Device: "d1", Module: "m1", Bag: "$.on=o"}, false},
		{"devices/d1/modules/m1/messages/events/%24.on=o&seq=1/", Topic{Kind: Telemetry, Device: "d1", Module: "m1", Bag: "%24.on=o&seq=1"}, false},
		{"devices/d1/messages/eventsX", Topic{}, true},
		{"devices/d1/modules/m1/inputs/in1/", Topic{Kind: Plain}, false},
		{"$iothub/twin/GET/?$rid=7", Topic{Kind: TwinGet, RID: "7"}, false},
		{"$iothub/twin/PATCH/properties/reported/?$rid=a%20b", Topic{Kind: TwinPatchReported, RID: "a b"}, false},
		{"$iothub/methods/res/200/?$rid=9", Topic{Kind: MethodResponse, RID: "9", Status: 200}, false},
		{"$iothub/methods/res/ok/?$rid=9", Topic{}, true},
		{"$iothub/twin/GET/", Topic{}, true},
		{"$iothub/other", Topic{Kind: IotHubOther}, false},
	} {
		got, err := ParseTopic(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("%q: %+v %v", tc.in, got, err)
		}
	}
}

func TestOutboundTopics(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{TwinResponseTopic(204, "r 1", 3), "$iothub/twin/res/204/?$rid=r%201&$version=3"},
		{TwinResponseTopic(200, "1", 0), "$iothub/twin/res/200/?$rid=1"},
		{DesiredPatchTopic(5), "$iothub/twin/PATCH/properties/desired/?$version=5"},
		{MethodRequestTopic("reboot", "9"), "$iothub/methods/POST/reboot/?$rid=9"},
		{InputTopic("d", "m", "in", nil, map[string]string{"connectionDeviceId": "d", "connectionModuleId": "cam"}),
			"devices/d/modules/m/inputs/in/$.cdid=d&$.cmid=cam"},
		{C2DTopic("d", map[string]string{"a": "1"}, nil), "devices/d/messages/devicebound/a=1"},
		{TelemetryTopic("d", "", nil, map[string]string{"contentType": "application/json"}), "devices/d/messages/events/$.ct=application%2Fjson"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func FuzzParseToken(f *testing.F) {
	tok, _ := BuildToken("h/devices/d", testKey, time.Unix(2000000000, 0))
	f.Add(tok)
	f.Add("SharedAccessSignature sr=a&sig=YQ%3D%3D&se=1&skn=x")
	f.Add("SharedAccessSignature &&&")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseToken(s)
		if err != nil {
			return
		}
		if p.SR == "" || p.SE == "" || len(p.Sig) == 0 {
			t.Fatalf("accepted %q with an empty field: %+v", s, p)
		}
		key, _ := base64.StdEncoding.DecodeString(testKey)
		p.Verify(key)
		ParseResource(p.Resource)
	})
}

func FuzzParseBag(f *testing.F) {
	f.Add("?$.mid=1&%24.ct=application%2Fjson&a=b&k")
	f.Add("a=%zz&=")
	f.Fuzz(func(t *testing.T, s string) {
		app, sys, err := ParseBag(s)
		if err != nil {
			return
		}
		// What was parsed encodes and parses back to the same maps.
		app2, sys2, err := ParseBag(string(AppendBag(nil, app, sys)))
		if err != nil {
			t.Fatalf("re-parse of %q: %v", s, err)
		}
		if len(app) != len(app2) || len(sys) != len(sys2) {
			t.Fatalf("%q: %v %v != %v %v", s, app, sys, app2, sys2)
		}
		for k, v := range app {
			if app2[k] != v {
				t.Fatalf("%q: app %q: %q != %q", s, k, v, app2[k])
			}
		}
	})
}

func FuzzParseTopic(f *testing.F) {
	for _, s := range []string{"devices/d/messages/events/a=1", "devices/d/modules/m/messages/events", "$iothub/twin/GET/?$rid=1",
		"$iothub/methods/res/200/?$rid=x", "$iothub/twin/PATCH/properties/reported/?$rid=1&$version=2", "a/b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tp, err := ParseTopic(s)
		if err != nil {
			return
		}
		switch tp.Kind {
		case Telemetry:
			if tp.Device == "" || strings.Contains(tp.Device, "/") {
				t.Fatalf("%q: device %q", s, tp.Device)
			}
		case TwinGet, TwinPatchReported, MethodResponse:
			if tp.RID == "" {
				t.Fatalf("%q: no rid", s)
			}
		}
	})
}

func TestParseUsername(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Username
		ok   bool
	}{
		{"h/d/?api-version=2021-04-12", Username{"h", "d", "", "2021-04-12"}, true},
		{"h/d/m/?api-version=2018-06-30&DeviceClientType=x%2F1", Username{"h", "d", "m", "2018-06-30"}, true},
		{"h/d", Username{"h", "d", "", ""}, true},
		{"h", Username{}, false},
		{"h/d/m/x/?api-version=1", Username{}, false},
		{"h//?a=1", Username{}, false},
	} {
		got, err := ParseUsername(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("%q: %+v %v", tc.in, got, err)
		}
	}
}

func FuzzParseUsername(f *testing.F) {
	f.Add("h/d/m/?api-version=2021-04-12&model-id=dtmi%3Ax")
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseUsername(s)
		if err == nil && (u.Host == "" || u.Device == "" || strings.Contains(u.Device, "/")) {
			t.Fatalf("%q: %+v", s, u)
		}
	})
}
