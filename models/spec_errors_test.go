package models

import (
	"strings"
	"testing"
)

// Errors name the field as a path: "sha256: ..." for one entry (the API's
// and the CLI's pull), "[0].sha256: ..." or "people.sha256: ..." in a
// section; never a path that starts with a dot or a colon.
func TestSpecErrorPaths(t *testing.T) {
	_, err := ParseSpec([]byte(`{"name": "x", "version": "1", "url": "https://example.com/x.onnx", "sha256": "abc"}`))
	if err == nil || !strings.HasPrefix(err.Error(), "sha256: want 64 hex digits") {
		t.Errorf("one entry: %v", err)
	}
	_, err = ParseSpec([]byte(`{"name": "x", "version": "1", "url": "https://example.com/x.onnx", "sha256": "abc", "colour": 1}`))
	if err == nil {
		t.Fatal("want an error")
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		if strings.HasPrefix(line, ".") || strings.HasPrefix(line, ":") {
			t.Errorf("one entry, two problems: line %q", line)
		}
	}
	_, err = ParseSpec([]byte(`[1]`))
	if err == nil || strings.HasPrefix(err.Error(), ":") {
		t.Errorf("not an object: %v", err)
	}
	_, err = ParseSection([]byte(`[{"name": "x", "version": "1", "url": "https://example.com/x.onnx", "sha256": "abc"}]`))
	if err == nil || !strings.HasPrefix(err.Error(), "[0] (x).sha256: want 64 hex digits") {
		t.Errorf("section: %v", err)
	}
}
