package route

import (
	"encoding/json"
	"testing"
	"time"
)

// benchTable is a realistic deployment: ten routes, one of them with a
// $body query, the others on sources, properties and system properties.
func benchTable(b *testing.B) *Table {
	b.Helper()
	tab, err := NewTable(map[string]Spec{
		"people": {Route: `FROM /messages/modules/cam/outputs/detections WHERE $body.label = 'person' AND $body.score >= 0.6 INTO BrokeredEndpoint("/modules/blink/inputs/in")`,
			Priority: prio(0), TimeToLiveSecs: ttl(60)},
		"detections": {Route: "FROM /messages/modules/cam/outputs/detections INTO $upstream", Priority: prio(2), TimeToLiveSecs: ttl(3600)},
		"camHealth":  {Route: "FROM /messages/modules/cam/outputs/health INTO $upstream", Priority: prio(1)},
		"hot":        {Route: `FROM /messages/modules/sensors/* WHERE as_number(temperature) > 30 INTO BrokeredEndpoint("/modules/alarm/inputs/hot")`, Priority: prio(1)},
		"leaf":       str("FROM /messages WHERE NOT is_defined($connectionModuleId) INTO $upstream"),
		"debug":      str(`FROM /messages/* WHERE level = 'debug' INTO BrokeredEndpoint("/modules/log/inputs/debug")`),
		"archive":    str(`FROM /messages/modules/cam/* INTO BrokeredEndpoint("/modules/archive/inputs/in")`),
		"plc":        {Route: `FROM /messages/modules/plc/outputs/* WHERE starts_with($connectionDeviceId, 'line-') INTO BrokeredEndpoint("/modules/mes/inputs/plc")`, Priority: prio(3)},
		"twin":       {Route: "FROM /twinChangeNotifications INTO $upstream", Priority: prio(9)},
		"audit":      str(`FROM /messages/modules/* WHERE $messageSchema = 'audit' INTO $upstream`),
	})
	if err != nil {
		b.Fatal(err)
	}
	return tab
}

// benchMsg is a detection from a camera pipeline: about 400 bytes of JSON.
func benchMsg() *Message {
	return &Message{
		Source: "/messages/modules/cam/outputs/detections",
		Body: []byte(`{"camera":"dock-3","frame":184467,"ts":"2024-05-01T12:00:00.123Z","model":"yolox-nano@4",` +
			`"boxes":[{"x":0.12,"y":0.33,"w":0.10,"h":0.31,"cls":"car","score":0.71},` +
			`{"x":0.52,"y":0.30,"w":0.05,"h":0.22,"cls":"person","score":0.88}],` +
			`"zone":"gate","track":1207,"label":"person","score":0.88,"latency_ms":23.4}`),
		App: map[string]string{"camera": "dock-3", "zone": "gate"},
		Sys: map[string]string{
			"contentType": "application/json", "contentEncoding": "utf-8",
			"connectionDeviceId": "edge-1", "connectionModuleId": "cam", "outputName": "detections",
			"messageId": "0b8f1c2e-5a46-4c0e-9d1d-3f6f1e3f2a10", "creationTime": "2024-05-01T12:00:00.123Z",
		},
	}
}

// BenchmarkTableMatch is the hub's routing cost per message (ns/op,
// allocs/op): a detection that three routes deliver to three sinks.
func BenchmarkTableMatch(b *testing.B) {
	tab, m := benchTable(b), benchMsg()
	if d := tab.Match(m); len(d) != 3 {
		b.Fatalf("%d deliveries, want 3: %+v", len(d), d)
	}
	b.ReportAllocs()
	for b.Loop() {
		tab.Match(m)
	}
}

// BenchmarkTableMatchVsUnmarshal interleaves one Match with one
// json.Unmarshal of the same body into map[string]any (what a hub that
// decodes every JSON body once would pay before routing) and reports the
// ratio match/unmarshal.
func BenchmarkTableMatchVsUnmarshal(b *testing.B) {
	tab, m := benchTable(b), benchMsg()
	var match, unmarshal time.Duration
	for b.Loop() {
		t0 := time.Now()
		tab.Match(m)
		t1 := time.Now()
		var v map[string]any
		if err := json.Unmarshal(m.Body, &v); err != nil {
			b.Fatal(err)
		}
		unmarshal += time.Since(t1)
		match += t1.Sub(t0)
	}
	n := float64(b.N)
	b.ReportMetric(float64(match.Nanoseconds())/n, "match-ns")
	b.ReportMetric(float64(unmarshal.Nanoseconds())/n, "unmarshal-ns")
	b.ReportMetric(float64(match)/float64(unmarshal), "match/unmarshal")
}
