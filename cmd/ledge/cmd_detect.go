package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"gocv.io/x/gocv"

	"ledge/inference"
)

func init() {
	register("detect", command{summary: "run a detector on images and print the detections as JSON lines", run: detectCmd})
}

// detectLine is one JSON line of `ledge detect`.
type detectLine struct {
	Image string `json:"image"`
	inference.Detection
}

func detectCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("detect", "--model M [--kind K] [--labels L] [--draw out.jpg] IMAGE...", stderr)
	var cf configFlags
	cf.register(fs)
	model := fs.String("model", "", "ONNX model file (required)")
	kind := fs.String("kind", "auto", "model kind: auto, "+kindList())
	labels := fs.String("labels", "", "labels: a file with one class name per line, or a comma-separated list (default: model metadata, or COCO-80 for 80 classes)")
	draw := fs.String("draw", "", "write the image with boxes drawn: a file for one image, a directory for several")
	minScore := fs.Float64("threshold", inference.DefaultMinScore, "minimum score, 0..1")
	iou := fs.Float64("iou", inference.DefaultIoU, "NMS IoU threshold, 0..1")
	threads := fs.Int("threads", 0, "intra-op threads (0: all cores)")
	provider := fs.String("provider", "", "execution provider: cpu (default), cuda, tensorrt")
	images, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if *model == "" || len(images) == 0 {
		fs.Usage()
		return errUsage
	}
	if *minScore < 0 || *minScore > 1 || *iou <= 0 || *iou > 1 {
		return fmt.Errorf("--threshold and --iou must be within 0..1")
	}
	k, err := inference.ParseKind(*kind)
	if err != nil {
		return fmt.Errorf("--kind: %w", err)
	}
	opts := inference.Options{Kind: k, Threads: *threads}
	if *provider != "" {
		opts.Providers = []string{*provider}
	}
	if *labels != "" {
		if opts.Labels, err = readLabels(*labels); err != nil {
			return err
		}
	}
	cfg, err := cf.loadSettings()
	if err != nil {
		return err
	}
	rt, err := inference.Open(cfg.Inference.Library)
	if err != nil {
		return err
	}
	defer rt.Close()
	det, err := rt.NewDetector(*model, opts)
	if err != nil {
		return err
	}
	defer det.Close()
	info := det.Info()
	how := "chosen"
	if k == inference.KindAuto {
		how = "auto-detected"
	}
	fmt.Fprintf(stderr, "model %s: kind %s (%s), input %dx%d, %d classes, labels from %s\n",
		filepath.Base(*model), info.Kind, how, info.InputWidth, info.InputHeight, info.Classes, info.LabelSource)

	enc := json.NewEncoder(stdout)
	var failed []string
	for _, path := range images {
		if err := detectOne(det, path, inference.Params{MinScore: float32(*minScore), IoU: float32(*iou)}, *draw, len(images) > 1, enc); err != nil {
			fmt.Fprintf(stderr, "ledge detect: %v\n", err)
			failed = append(failed, path)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d images failed", len(failed), len(images))
	}
	return nil
}

func detectOne(det *inference.Detector, path string, p inference.Params, draw string, many bool, enc *json.Encoder) error {
	if _, err := os.Stat(path); err != nil {
		return err
	}
	img := gocv.IMRead(path, gocv.IMReadColor)
	defer img.Close()
	if img.Empty() {
		return fmt.Errorf("%s: not an image OpenCV can decode", path)
	}
	dets, err := det.Detect(img, p)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for _, d := range dets {
		if err := enc.Encode(detectLine{Image: path, Detection: d}); err != nil {
			return err
		}
	}
	if draw == "" {
		return nil
	}
	out := draw
	if many {
		if err := os.MkdirAll(draw, 0o755); err != nil {
			return err
		}
		out = filepath.Join(draw, filepath.Base(path))
	}
	inference.Annotate(&img, dets)
	if !gocv.IMWrite(out, img) {
		return fmt.Errorf("cannot write %s (does its extension name an image format, e.g. .jpg?)", out)
	}
	return nil
}

// readLabels takes a labels file, or a comma-separated list.
func readLabels(v string) ([]string, error) {
	if _, err := os.Stat(v); err == nil {
		return inference.LoadLabels(v)
	} else if !errors.Is(err, os.ErrNotExist) || !strings.Contains(v, ",") {
		return nil, fmt.Errorf("--labels: %w", err)
	}
	l, err := inference.ParseLabels([]byte(strings.ReplaceAll(v, ",", "\n")))
	if err != nil {
		return nil, fmt.Errorf("--labels list: %w", err)
	}
	return l, nil
}

func kindList() string {
	var s []string
	for _, k := range inference.Kinds() {
		s = append(s, string(k))
	}
	return strings.Join(s, ", ")
}
