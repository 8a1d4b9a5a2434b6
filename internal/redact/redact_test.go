package redact

import (
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	for in, want := range map[string]string{
		"rtsp://admin:hunter2@10.0.0.5:554/stream": "rtsp://admin:xxxxx@10.0.0.5:554/stream",
		"https://host/m.onnx?sv=1&sig=abc":         "https://host/m.onnx?...",
		"https://user@host/x":                      "https://user@host/x",
		"/dev/video0":                              "/dev/video0",
		"tcp://u:p@broker:1883":                    "tcp://u:xxxxx@broker:1883",
		"rtsp://a:b%zz@h/":                         "rtsp://a:xxxxx@h/",
	} {
		if got := URL(in); got != want {
			t.Errorf("URL(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzURL(f *testing.F) {
	f.Add("rtsp://admin:secretpw@cam/1")
	f.Add("https://h/p?sig=secretsig")
	f.Fuzz(func(t *testing.T, s string) {
		out := URL(s)
		// A password that was in the userinfo of a URL with a scheme is gone.
		if i := strings.Index(s, "://"); i > 0 {
			rest := s[i+3:]
			if at := strings.LastIndex(rest, "@"); at > 0 {
				if c := strings.Index(rest[:at], ":"); c >= 0 && len(rest[c+1:at]) >= 8 && !strings.ContainsAny(rest[c+1:at], "/?#@%") && strings.Contains(out, rest[c+1:at]) && !strings.Contains(out, "xxxxx") {
					t.Fatalf("password %q left in %q", rest[c+1:at], out)
				}
			}
		}
	})
}
