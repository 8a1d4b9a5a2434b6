package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"ledge/internal/testenv"
)

// hostileManifests are manifests made to hurt a parser: endless, too
// big, too deep, too wide, aliased, with megabyte keys and numbers. Each
// is about the 1 MiB limit or over it.
func hostileManifests(t *testing.T, dir string) map[string]string {
	const mib = 1 << 20
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	azure := func(modules, extra string) string {
		return `{"modulesContent": {"$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "runtime": {"type": "docker"}, "modules": {` +
			modules + `}}}` + extra + `}}`
	}
	module := func(name, settings string) string {
		return `"` + name + `": {"type": "docker", "settings": {"image": "cam:1"` + settings + `}}`
	}
	var b strings.Builder
	out := map[string]string{
		"endless (/dev/zero)": "/dev/zero",
		"one byte over 1 MiB": write("big.yaml", "version: '1'\n"+strings.Repeat(" ", mib)),
		"deep JSON":           write("deep.json", strings.Repeat(`{"a":`, mib/5)),
		"deep YAML":           write("deep.yaml", "version: '1'\nmodels:\n"+strings.Repeat("- ", mib/2-20)),
		"wide YAML list":      write("wide.yaml", "version: '1'\nmodels: ["+strings.Repeat("0,", mib/2-40)+"0]\n"),
		"wide YAML mapping":   write("widemap.yaml", "version: '1'\nmodels: {"+strings.Repeat("a: 0, ", mib/6-40)+"b: 0}\n"),
		"wide JSON array":     write("wide.json", `{"version": "1", "twins": {"m": {"a": [`+strings.Repeat("0,", mib/2-40)+`0]}}}`),
		"alias bomb": write("bomb.yaml", "version: '1'\nmodels:\n  a: &a [x,x,x,x,x,x,x,x,x,x]\n  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"+
			"  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"+
			"  f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n  g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]\n  h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"+
			"  i: [*h,*h,*h,*h,*h,*h,*h,*h,*h,*h]\n"),
		"wide createOptions":   write("wideco.json", azure(module("cam", `, "createOptions": "{\"Env\": [`+strings.Repeat(`1,`, mib/2-200)+`1]}"`), "")),
		"megabyte key":         write("key.json", azure(module("cam", `, "createOptions": "{\"`+strings.Repeat("k", mib-300)+`\": 1}"`), "")),
		"megabyte number":      write("num.json", azure(module("cam", `, "createOptions": "{\"HostConfig\": {\"Memory\": `+strings.Repeat("9", mib-300)+`}}"`), "")),
		"megabyte exponent":    write("exp.json", azure(module("cam", `, "createOptions": "{\"HostConfig\": {\"Memory\": 1e`+strings.Repeat("9", mib-300)+`}}"`), "")),
		"megabyte env value":   write("env.json", azure(`"cam": {"settings": {"image": "cam:1"}, "env": {"A": {"value": `+strings.Repeat("7", mib-300)+`}}}`, "")),
		"many unknown keys":    write("unknown.json", azure(`"cam": {"settings": {"image": "cam:1"}, `+unknownKeys(mib/20)+`}`, "")),
		"many bad modules":     write("bad.json", azure(manyModules(mib/180, `"restartPolicy": "sometimes", `), "")),
		"many chunks":          write("chunks.json", azure(module("cam", chunks(&b, 500, 2000)), "")),
		"many modules (valid)": write("modules.json", azure(manyModules(mib/160, ""), "")),
	}
	return out
}

func unknownKeys(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `"k%d": %d, `, i, i)
	}
	return strings.TrimSuffix(b.String(), ", ")
}

func manyModules(n int, extra string) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, `"m%05d": {"type": "docker", %s"settings": {"image": "cam:1", "createOptions": "{\"Env\":[\"I=%d\"]}"}}`, i, extra, i)
	}
	return b.String()
}

// chunks writes createOptions split into n chunks of size characters.
func chunks(b *strings.Builder, n, size int) string {
	text := `{"Env":["` + strings.Repeat("x", n*size) + `"]}`
	b.Reset()
	for i := 0; i < n && i*size < len(text); i++ {
		name := "createOptions"
		if i > 0 {
			name = fmt.Sprintf("createOptions%02d", i)
		}
		fmt.Fprintf(b, `, "%s": "%s"`, name, strings.ReplaceAll(text[i*size:min(len(text), (i+1)*size)], `"`, `\"`))
	}
	return b.String()
}

// TestDeployCheckHostileManifests: `ledge deploy check --offline` on
// hostile manifests refuses or accepts each with a message, never
// crashes or hangs, and stays within 50 MB of its resident memory on a
// small manifest (peak RSS from the kernel's accounting of the child).
// Times are logged, not asserted.
func TestDeployCheckHostileManifests(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "ledge.yaml")
	os.WriteFile(conf, []byte("agent:\n  allowElevatedPermissions: true\n"), 0o644)
	small := filepath.Join(dir, "small.yaml")
	os.WriteFile(small, []byte("version: '1'\nmodules:\n  cam: {image: cam:1, createOptions: {Env: [A=1]}}\n"), 0o644)
	run := func(file string) (peakKB int64, elapsed time.Duration, code int, out string) {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, ledgeBin, "deploy", "check", "--offline", "--config", conf, file)
		cmd.Env = append(os.Environ(), "LEDGE_ORT_LIB="+testenv.ORTLib(t))
		var buf bytes.Buffer
		cmd.Stdout, cmd.Stderr = &buf, &buf
		start := time.Now()
		err := cmd.Run()
		elapsed = time.Since(start)
		if ctx.Err() != nil {
			t.Fatalf("%s: still running after 2 minutes", file)
		}
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss, elapsed, code, buf.String()
	}
	var base int64
	for range 3 {
		kb, _, code, out := run(small)
		if code != 0 {
			t.Fatalf("small manifest: exit %d\n%s", code, out)
		}
		base = max(base, kb)
	}
	t.Logf("baseline: deploy check --offline of a small manifest peaks at %.1f MB", float64(base)/1024)
	for name, file := range hostileManifests(t, dir) {
		kb, elapsed, code, out := run(file)
		first, _, _ := strings.Cut(out, "\n")
		t.Logf("%-22s exit %d  %6.1f MB above the baseline  %5.2f s  %.150s", name, code, float64(kb-base)/1024, elapsed.Seconds(), first)
		if strings.Contains(out, "panic") || strings.Contains(out, "goroutine ") || code > 1 {
			t.Errorf("%s: exit %d\n%.2000s", name, code, out)
		}
		if kb-base > 50*1024 {
			t.Errorf("%s: peak RSS %.1f MB above the baseline (at most 50)", name, float64(kb-base)/1024)
		}
		if code == 1 && len(strings.TrimSpace(out)) == 0 {
			t.Errorf("%s: refused without a message", name)
		}
	}
}
