package inference

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"ledge/internal/testenv"
)

func TestParseLabels(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []string
		wantErr string
	}{
		{"person\nbicycle\n", []string{"person", "bicycle"}, ""},
		{"person\r\nbicycle\r\n\r\n\n", []string{"person", "bicycle"}, ""},
		{"  traffic light \n", []string{"traffic light"}, ""},
		{"", nil, "empty"},
		{"\n\n  \n", nil, "empty"},
		{"a\n\nb\n", nil, "line 2"},
		{"a\xff\n", nil, "UTF-8"},
	} {
		got, err := ParseLabels([]byte(tc.in))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseLabels(%q): err %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ParseLabels(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestSharedLabelsMatchCOCO(t *testing.T) {
	got, err := LoadLabels(testenv.Model(t, "coco80.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, COCO80()) {
		t.Errorf("coco80.txt and the built-in COCO names differ")
	}
}

func TestLoadLabelsEmptyFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "labels.txt")
	os.WriteFile(p, nil, 0o644)
	_, err := LoadLabels(p)
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "empty") {
		t.Errorf("err %v: want it to name the file and say empty", err)
	}
}

func TestParseNames(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []string
		wantErr string
	}{
		{"{0: 'person', 1: 'bicycle'}", []string{"person", "bicycle"}, ""},
		{`{1: "b", 0: 'a\'s'}`, []string{"a's", "b"}, ""},
		{"['x', 'y',]", []string{"x", "y"}, ""},
		{"{0: 'a', 0: 'b'}", nil, "repeated"},
		{"{0: 'a', 2: 'b'}", nil, "class ids"},
		{"{0: 'a'", nil, "want ','"},
		{"person", nil, "want '{'"},
		{"{}", nil, "no classes"},
		{"{0: 'a'} x", nil, "after"},
	} {
		got, err := ParseNames(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseNames(%q): err %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ParseNames(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func FuzzParseLabels(f *testing.F) {
	f.Add([]byte("person\nbicycle\n"))
	f.Add([]byte("a\r\n\r\nb"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := ParseLabels(data)
		if err != nil {
			return
		}
		if len(got) == 0 {
			t.Fatal("no error and no labels")
		}
		for i, l := range got {
			if l == "" || l != strings.TrimSpace(l) || strings.Contains(l, "\n") || !utf8.ValidString(l) {
				t.Fatalf("label %d %q is not a trimmed, non-empty line", i, l)
			}
		}
	})
}

func FuzzParseNames(f *testing.F) {
	f.Add("{0: 'person', 1: 'bicycle'}")
	f.Add(`['a', "b\"c"]`)
	f.Add("{0: 'a', 1:")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseNames(s)
		if err == nil && len(got) == 0 {
			t.Fatal("no error and no names")
		}
	})
}
