package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gocv.io/x/gocv"

	"ledge/internal/testenv"
)

func TestDetectCommand(t *testing.T) {
	bus := testenv.Media(t, "bus.jpg")
	drawn := filepath.Join(t.TempDir(), "bus_boxes.jpg")
	out, errOut, code := ledge(t, "detect", "--model", testenv.Model(t, "yolox_nano.onnx"),
		"--labels", testenv.Model(t, "coco80.txt"), "--draw", drawn, bus)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(errOut, "kind yolox (auto-detected)") {
		t.Errorf("stderr does not say which kind was chosen: %s", errOut)
	}
	persons, buses := 0, 0
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var d struct {
			Image string
			Label string
			Score float64
			Box   struct{ X1, Y1, X2, Y2 float64 }
		}
		if err := json.Unmarshal([]byte(line), &d); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if d.Image != bus || d.Box.X2 <= d.Box.X1 || d.Box.X2 > 810 || d.Box.Y2 > 1080 {
			t.Errorf("bad line %q", line)
		}
		if d.Score >= 0.5 {
			switch d.Label {
			case "person":
				persons++
			case "bus":
				buses++
			}
		}
	}
	if persons != 3 || buses != 1 {
		t.Errorf("got %d persons and %d buses >= 0.5, want 3 and 1:\n%s", persons, buses, out)
	}
	img := gocv.IMRead(drawn, gocv.IMReadColor)
	defer img.Close()
	if img.Empty() || img.Cols() != 810 || img.Rows() != 1080 {
		t.Errorf("--draw output %s: empty or wrong size", drawn)
	}
	orig := gocv.IMRead(bus, gocv.IMReadColor)
	defer orig.Close()
	diff := gocv.NewMat()
	defer diff.Close()
	gocv.AbsDiff(img, orig, &diff)
	gray := gocv.NewMat()
	defer gray.Close()
	gocv.CvtColor(diff, &gray, gocv.ColorBGRToGray)
	gocv.Threshold(gray, &gray, 60, 255, gocv.ThresholdBinary)
	if n := gocv.CountNonZero(gray); n < 5000 {
		t.Errorf("--draw output differs from the input in only %d pixels: no boxes drawn?", n)
	}
}

func TestDetectSeveralImages(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "drawn")
	out, errOut, code := ledge(t, "detect", "--model", testenv.Model(t, "fastestdet.onnx"), "--draw", dir,
		testenv.Media(t, "bus.jpg"), testenv.Media(t, "zidane.jpg"), "--threshold", "0.5")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "bus.jpg") || !strings.Contains(out, "zidane.jpg") {
		t.Errorf("output lacks an image:\n%s", out)
	}
	for _, f := range []string{"bus.jpg", "zidane.jpg"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
}

// TestDetectBadInput: each bad input gets exit code 1 and a message naming
// what is wrong; none panics (ledge() fails the test on a panic).
func TestDetectBadInput(t *testing.T) {
	dir := t.TempDir()
	model := testenv.Model(t, "yolox_nano.onnx")
	data, _ := os.ReadFile(model)
	truncated := filepath.Join(dir, "truncated.onnx")
	os.WriteFile(truncated, data[:len(data)/2], 0o644)
	notImage := filepath.Join(dir, "notes.jpg")
	os.WriteFile(notImage, []byte("these are not pixels"), 0o644)
	emptyLabels := filepath.Join(dir, "labels.txt")
	os.WriteFile(emptyLabels, nil, 0o644)
	bus := testenv.Media(t, "bus.jpg")

	for _, tc := range []struct {
		name string
		args []string
		want string
		code int
	}{
		{"missing model", []string{"--model", filepath.Join(dir, "none.onnx"), bus}, "none.onnx", 1},
		{"truncated model", []string{"--model", truncated, bus}, "not a readable ONNX model", 1},
		{"not an image", []string{"--model", model, notImage}, "not an image", 1},
		{"missing image", []string{"--model", model, filepath.Join(dir, "none.jpg")}, "none.jpg", 1},
		{"empty labels", []string{"--model", model, "--labels", emptyLabels, bus}, "empty", 1},
		{"wrong kind", []string{"--model", model, "--kind", "fastestdet", bus}, "does not fit kind fastestdet", 1},
		{"unknown kind", []string{"--model", model, "--kind", "ssd", bus}, "unknown model kind", 1},
		{"threshold", []string{"--model", model, "--threshold", "1.5", bus}, "within 0..1", 1},
		{"no image", []string{"--model", model}, "Usage", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, code := ledge(t, append([]string{"detect"}, tc.args...)...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, errOut, tc.code, tc.want)
			}
		})
	}
}
