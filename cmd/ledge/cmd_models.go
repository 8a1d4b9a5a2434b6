package main

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"ledge/agent"
	"ledge/models"
)

func init() {
	register("models", command{summary: "list, pull, activate and roll back models; sign model digests", run: modelsCmd})
}

const modelsUsage = `Usage: ledge models <subcommand> [flags]

Subcommands:
  list                    models in the store: versions, states, download progress (--json)
  pull NAME@VERSION       download a version: --url URL --sha256 HEX, or --file PATH
                          (--activate: activate it once ready; --wait: follow the download)
  activate NAME@VERSION   load, warm and switch to a stored version (pinned until a
                          deployment changes this model's entry)
  rollback NAME           go back to the version that was active before
  sign --key KEY FILE     sign a model file's digest (prints sha256 and signature for a
                          manifest's models: entry)
  push FILE oci://REGISTRY/REPO:TAG
                          publish a model as an OCI artifact; prints its digest reference
                          (pull it with --url oci://REGISTRY/REPO@sha256:...)

See docs/models.md.
`

func modelsCmd(args []string, stdout, stderr io.Writer) error {
	return subcommands("models", modelsUsage, map[string]func([]string, io.Writer, io.Writer) error{
		"list":     modelsList,
		"pull":     modelsPull,
		"activate": modelsActivate,
		"rollback": modelsRollback,
		"sign":     modelsSign,
		"push":     modelsPush, // cmd_models_oci.go
	})(args, stdout, stderr)
}

func modelsList(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("models list", "[--json]", stderr)
	var cf configFlags
	cf.register(fs)
	asJSON := fs.Bool("json", false, "print the models as JSON")
	if _, err := parseN(fs, args, 0); err != nil {
		return err
	}
	d, err := connectDaemon(&cf)
	if err != nil {
		return err
	}
	ctx, cancel := withTimeout(30 * time.Second)
	defer cancel()
	var res struct {
		Models []models.Model `json:"models"`
	}
	if err := d.do(ctx, "GET", "/models", nil, &res); err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res.Models)
	}
	if len(res.Models) == 0 {
		fmt.Fprintln(stdout, "no models in the store")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tVERSION\tSTATE\tSIZE\tKIND\tDIGEST\tDETAIL")
	for _, m := range res.Models {
		for _, v := range m.Versions {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.12s\t%s\n", m.Name, v.Version, v.State, sizeText(v.Size), cmp.Or(v.Kind, "auto"), v.Digest, versionDetail(m, v))
		}
	}
	return tw.Flush()
}

func sizeText(n int64) string {
	if n <= 0 {
		return "-"
	}
	return bytesText(n)
}

func orDash(s string) string { return cmp.Or(s, "-") }

// versionDetail is the DETAIL column: progress, errors, what the
// deployment asks for, pins.
func versionDetail(m models.Model, v models.Version) string {
	var parts []string
	if p := v.Progress; p != nil && (p.Bytes > 0 || p.Total > 0) {
		s := bytesText(p.Bytes)
		if p.Total > 0 {
			s = fmt.Sprintf("%.0f%% of %s", p.Percent, bytesText(p.Total))
		}
		if p.Rate > 0 {
			s += fmt.Sprintf(" at %s/s", bytesText(int64(p.Rate)))
		}
		if p.Attempt > 1 {
			s += fmt.Sprintf(" (attempt %d)", p.Attempt)
		}
		parts = append(parts, s)
	}
	if v.Error != "" {
		parts = append(parts, v.Error)
	}
	if m.Desired == v.Version {
		parts = append(parts, "asked for by the deployment")
	}
	if m.Active == v.Version && m.Pinned {
		parts = append(parts, "chosen by hand")
	}
	if v.Signer != "" {
		parts = append(parts, "signed by "+v.Signer)
	}
	return strings.Join(parts, "; ")
}

func modelsPull(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("models pull", "NAME@VERSION (--url URL --sha256 HEX | --file PATH) [flags]", stderr)
	var cf configFlags
	cf.register(fs)
	rawURL := fs.String("url", "", "where to download the model: https://..., file:///path, or oci://REGISTRY/REPO@sha256:... (or :TAG)")
	file := fs.String("file", "", "a model file on this machine (sets --url file:///PATH and computes --sha256)")
	digest := fs.String("sha256", "", "the file's SHA-256 (`sha256sum FILE`)")
	size := fs.Int64("size", 0, "the file's size in bytes (optional)")
	kind := fs.String("kind", "", "model kind: auto, yolox, yolov8, yolov5, fastestdet, classify (default auto)")
	labels := fs.String("labels", "", "class names, comma-separated, or @FILE with one a line")
	inputSize := fs.String("input-size", "", "WIDTHxHEIGHT for a model with a dynamic input")
	sig := fs.String("signature", "", "signature of the digest: base64, or @FILE.json from `ledge models sign --json`")
	activate := fs.Bool("activate", false, "activate the version (pinned) once it is downloaded and verified")
	wait := fs.Bool("wait", false, "follow the download (and activation) until it is done")
	timeout := fs.Duration("timeout", 30*time.Minute, "how long --wait follows it")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || (*rawURL == "") == (*file == "") {
		fs.Usage()
		return errUsage
	}
	name, version, err := models.ParseRef(pos[0])
	if err != nil {
		return err
	}
	entry := map[string]any{"name": name, "version": version}
	if *file != "" {
		abs, err := filepath.Abs(*file)
		if err != nil {
			return err
		}
		sum, n, err := fileDigest(abs)
		if err != nil {
			return err
		}
		if *digest != "" && !strings.EqualFold(strings.TrimPrefix(*digest, "sha256:"), sum) {
			return fmt.Errorf("%s has sha256 %s, not %s", *file, sum, *digest)
		}
		*digest = sum
		if *size == 0 {
			*size = n
		}
		if abs, err = importFile(abs, cf, name, version, sum); err != nil {
			return err
		}
		*rawURL = (&url.URL{Scheme: "file", Path: abs}).String()
	}
	if *digest == "" && strings.HasPrefix(*rawURL, "oci://") {
		if *rawURL, err = resolveOCIEntry(*rawURL, entry, digest); err != nil { // cmd_models_oci.go
			return err
		}
	}
	if *digest == "" {
		return errors.New("--sha256 is required with --url (the store verifies every byte against it)")
	}
	entry["url"], entry["sha256"] = *rawURL, *digest
	if *size > 0 {
		entry["size"] = *size
	}
	if *kind != "" {
		entry["kind"] = *kind
	}
	if *labels != "" {
		ls, err := readLabelList(*labels)
		if err != nil {
			return err
		}
		entry["labels"] = ls
	}
	if *inputSize != "" {
		entry["inputSize"] = *inputSize
	}
	if *sig != "" {
		s, err := readSignature(*sig)
		if err != nil {
			return err
		}
		entry["signature"] = s
	}
	body, _ := json.Marshal(entry)
	d, err := connectDaemon(&cf)
	if err != nil {
		return err
	}
	path := "/models"
	if *activate {
		path += "?activate=true"
	}
	ctx, cancel := withTimeout(2 * time.Minute)
	defer cancel()
	var res struct {
		Version models.Version `json:"version"`
	}
	if err := d.do(ctx, "POST", path, body, &res); err != nil {
		return fmt.Errorf("%s: %w", pos[0], err)
	}
	first := fmt.Sprintf("%s: %s", res.Version.Ref(), res.Version.State)
	fmt.Fprintln(stdout, first)
	if !*wait {
		return nil
	}
	want := models.StateReady
	if *activate {
		want = models.StateActive
	}
	return followModel(d, name, version, want, *timeout, stdout, first)
}

// followModel prints a version's state and progress until it reaches want
// (ready counts for active too when another version was pinned) or fails;
// last is the line already printed.
func followModel(d *daemon, name, version string, want models.State, timeout time.Duration, w io.Writer, last string) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		ctx, cancel := withTimeout(10 * time.Second)
		var m models.Model
		err := d.do(ctx, "GET", "/models/"+url.PathEscape(name), nil, &m)
		cancel()
		if err != nil {
			return err
		}
		var v *models.Version
		for i := range m.Versions {
			if m.Versions[i].Version == version {
				v = &m.Versions[i]
			}
		}
		if v == nil {
			return fmt.Errorf("%s@%s is no longer in the store", name, version)
		}
		line := fmt.Sprintf("%s@%s: %s", name, version, v.State)
		if det := versionDetail(m, *v); det != "" {
			line += " (" + det + ")"
		}
		if line != last {
			fmt.Fprintln(w, line)
			last = line
		}
		switch {
		case v.State == models.StateFailed:
			return fmt.Errorf("%s@%s failed: %s", name, version, v.Error)
		case v.State == want, want == models.StateReady && v.State == models.StateActive:
			return nil
		}
		time.Sleep(300 * time.Millisecond)
	}
	return fmt.Errorf("%s@%s not %s after %s", name, version, want, timeout)
}

// importFile copies a model file from outside the daemon's data dir into
// its import folder, which the store may read (models.fileRoots aside)
// and empties once the file is stored; it returns where the daemon reads
// it.
func importFile(abs string, cf configFlags, name, version, digest string) (string, error) {
	cfg, err := cf.load()
	if err != nil {
		return "", err
	}
	data, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(abs, data+"/") {
		return abs, nil
	}
	dir := models.ImportDir(data)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", fmt.Errorf("import folder: %w", err)
	}
	dst := filepath.Join(dir, fmt.Sprintf("%s@%s-%.12s%s", name, version, digest, filepath.Ext(abs)))
	in, err := os.Open(abs)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return "", fmt.Errorf("import folder: %w", err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(dst)
		return "", fmt.Errorf("copy %s to %s: %w", abs, dst, err)
	}
	return dst, out.Close()
}

func fileDigest(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

func readLabelList(v string) ([]string, error) {
	if file, ok := strings.CutPrefix(v, "@"); ok {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		var out []string
		for _, l := range strings.Split(string(data), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				out = append(out, l)
			}
		}
		return out, nil
	}
	var out []string
	for _, l := range strings.Split(v, ",") {
		out = append(out, strings.TrimSpace(l))
	}
	return out, nil
}

// readSignature takes base64, or @FILE holding the JSON `ledge models
// sign --json` prints (or its "signature" object).
func readSignature(v string) (any, error) {
	file, ok := strings.CutPrefix(v, "@")
	if !ok {
		return v, nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Signature json.RawMessage `json:"signature"`
	}
	if json.Unmarshal(data, &doc) == nil && len(doc.Signature) > 0 {
		return doc.Signature, nil
	}
	return json.RawMessage(data), nil
}

func modelsActivate(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("models activate", "NAME@VERSION", stderr)
	var cf configFlags
	cf.register(fs)
	pos, err := parseN(fs, args, 1)
	if err != nil {
		return err
	}
	name, version, err := models.ParseRef(pos[0])
	if err != nil {
		return err
	}
	d, err := connectDaemon(&cf)
	if err != nil {
		return err
	}
	ctx, cancel := withTimeout(5 * time.Minute)
	defer cancel()
	var res struct {
		Version models.Version `json:"version"`
	}
	if err := d.do(ctx, "POST", "/models/"+url.PathEscape(name)+"/activate", map[string]string{"version": version}, &res); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: active\n", res.Version.Ref())
	return nil
}

func modelsRollback(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("models rollback", "NAME", stderr)
	var cf configFlags
	cf.register(fs)
	pos, err := parseN(fs, args, 1)
	if err != nil {
		return err
	}
	if why := models.ValidName(pos[0]); why != "" {
		return errors.New(why)
	}
	d, err := connectDaemon(&cf)
	if err != nil {
		return err
	}
	ctx, cancel := withTimeout(5 * time.Minute)
	defer cancel()
	var res struct {
		Version models.Version `json:"version"`
	}
	if err := d.do(ctx, "POST", "/models/"+url.PathEscape(pos[0])+"/rollback", nil, &res); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: active (rolled back)\n", res.Version.Ref())
	return nil
}

func modelsSign(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("models sign", "--key KEY (FILE | --sha256 HEX) [--json]", stderr)
	keyFile := fs.String("key", "", "private key from `ledge keys gen` (required)")
	digest := fs.String("sha256", "", "sign this digest instead of a file's")
	asJSON := fs.Bool("json", false, "print JSON ({\"sha256\", \"size\", \"signature\"}) for `ledge models pull --signature @FILE`")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if *keyFile == "" || (len(pos) == 1) == (*digest != "") || len(pos) > 1 {
		fs.Usage()
		return errUsage
	}
	keyPEM, err := os.ReadFile(*keyFile)
	if err != nil {
		return err
	}
	priv, err := agent.ParsePrivateKey(keyPEM)
	if err != nil {
		return fmt.Errorf("%s: %w", *keyFile, err)
	}
	var size int64
	sum := strings.ToLower(strings.TrimPrefix(*digest, "sha256:"))
	if len(pos) == 1 {
		if sum, size, err = fileDigest(pos[0]); err != nil {
			return err
		}
	} else if b, err := hex.DecodeString(sum); err != nil || len(b) != 32 {
		return fmt.Errorf("--sha256 %q: want 64 hex digits", *digest)
	}
	// The signed message is the digest's 64 lowercase hex digits.
	sig := agent.Sign(priv, []byte(sum))
	if *asJSON {
		out := map[string]any{"sha256": sum, "signature": sig}
		if size > 0 {
			out["size"] = size
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	fmt.Fprintf(stdout, "sha256: %s\n", sum)
	if size > 0 {
		fmt.Fprintf(stdout, "size: %d\n", size)
	}
	fmt.Fprintf(stdout, "signature: {keyId: %s, sig: \"%s\"}\n", sig.KeyID, sig.Sig)
	return nil
}
