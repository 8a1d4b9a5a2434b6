package pipeline

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// An event read back from the event log has no capture time: the API
// leaves the field out rather than showing year 1.
func TestEventJSONHasNoZeroTimes(t *testing.T) {
	data, _ := json.Marshal(Event{Type: "object.enter", Pipeline: "p", Time: time.Now()})
	if strings.Contains(string(data), "0001-01-01") {
		t.Errorf("zero time in %s", data)
	}
	data, _ = json.Marshal(Event{Type: "object.enter", Time: time.Now(), Captured: time.Now()})
	if !strings.Contains(string(data), `"captured"`) {
		t.Errorf("capture time lost: %s", data)
	}
}
