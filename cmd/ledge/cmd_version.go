package main

import (
	"fmt"
	"io"
	"runtime"

	"ledge/inference"
)

func init() {
	register("version", command{summary: "print the versions of ledge, Go and ONNX Runtime", run: versionCmd})
}

func versionCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("version", "[flags]", stderr)
	var cf configFlags
	cf.register(fs)
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "ledge       %s (commit %s)\n", version, commit)
	fmt.Fprintf(stdout, "go          %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	cfg, err := cf.loadSettings()
	if err != nil {
		fmt.Fprintf(stdout, "onnxruntime unknown (%v)\n", err)
		return nil
	}
	rt, err := inference.Open(cfg.Inference.Library)
	if err != nil {
		fmt.Fprintf(stdout, "onnxruntime not loaded: %v\n", err)
		return nil
	}
	defer rt.Close()
	fmt.Fprintf(stdout, "onnxruntime %s (%s)\n", rt.Version(), rt.Library())
	return nil
}
