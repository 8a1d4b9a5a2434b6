package manifest

import (
	"encoding/json"
	"os"
	"testing"
)

func TestWithVersion(t *testing.T) {
	for _, file := range []string{"testdata/native-sample.yaml", "testdata/native-sample.jsonc", "testdata/azure-sample.json"} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		before, err := Parse(data)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		out, err := WithVersion(data, "1750000000000-people")
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		after, err := Parse(out)
		if err != nil {
			t.Fatalf("%s stamped: %v", file, err)
		}
		if after.Version != "1750000000000-people" || after.Format != before.Format {
			t.Errorf("%s: version %q format %s, want the stamp and %s", file, after.Version, after.Format, before.Format)
		}
		// Everything but the version means the same.
		before.Version, after.Version = "", ""
		b1, _ := json.Marshal(before)
		b2, _ := json.Marshal(after)
		if string(b1) != string(b2) {
			t.Errorf("%s: the stamp changed more than the version:\n%s\n%s", file, b1, b2)
		}
	}
	if _, err := WithVersion([]byte("version: \"1\"\n"), "bad\x01"); err == nil {
		t.Error("a version with a control character was stamped")
	}
}
