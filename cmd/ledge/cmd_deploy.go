package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"ledge/agent"
	"ledge/agent/manifest"
)

func init() {
	register("deploy", command{summary: "check, apply, sign and roll back deployment manifests; show their state", run: deployCmd})
}

const deployUsage = `Usage: ledge deploy <subcommand> [flags]

Subcommands:
  check FILE      validate a manifest and print its plan against what runs now
                  (--offline: without a running ledge)
  apply FILE      make FILE the current deployment (--wait: follow it until it converges)
  status          the reported state: deployment, modules, sections (--json)
  history         past deployments
  rollback        go back to the last good deployment
  sign FILE       sign FILE with an ed25519 key (writes FILE.sig; --envelope: one signed document)

A signature FILE.sig next to FILE is used automatically; --sig names another.
`

func deployCmd(args []string, stdout, stderr io.Writer) error {
	return subcommands("deploy", deployUsage, map[string]func([]string, io.Writer, io.Writer) error{
		"check":    deployCheck,
		"apply":    deployApply,
		"status":   deployStatus,
		"history":  deployHistory,
		"rollback": deployRollback,
		"sign":     deploySign,
	})(args, stdout, stderr)
}

// maxSignature bounds a signature file.
const maxSignature = 64 << 10

// readLimited reads a file through a limit: a file over it (or one that
// never ends, like /dev/zero) is refused after limit+1 bytes, never read
// whole.
func readLimited(file string, limit int64, what string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: a %s is at most %d bytes (%s); this one is longer", file, what, limit, limitText(limit))
	}
	return data, nil
}

// limitText says a limit in the largest unit it is a whole number of
// (1 MiB, 64 KiB).
func limitText(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// readManifest reads FILE and its signature (--sig, or FILE.sig if it
// exists), each through its limit.
func readManifest(file, sigFile string) (data, sig []byte, err error) {
	if data, err = readLimited(file, manifest.MaxSize, "manifest"); err != nil {
		return nil, nil, err
	}
	if !utf8.Valid(data) {
		return nil, nil, fmt.Errorf("%s is not UTF-8 text", file)
	}
	if sigFile == "" {
		if _, err := os.Stat(file + ".sig"); err == nil {
			sigFile = file + ".sig"
		}
	}
	if sigFile != "" {
		if sig, err = readLimited(sigFile, maxSignature, "signature"); err != nil {
			return nil, nil, err
		}
	}
	return data, sig, nil
}

type manifestBody struct {
	Manifest  string `json:"manifest"`
	Signature string `json:"signature,omitempty"`
}

func deployCheck(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("deploy check", "[--offline] [--sig FILE.sig] FILE", stderr)
	var cf configFlags
	cf.register(fs)
	offline := fs.Bool("offline", false, "check without a running ledge: everything is new, sections are not validated by their owners")
	sigFile := fs.String("sig", "", "detached signature (default FILE.sig when it exists)")
	pos, err := parseN(fs, args, 1)
	if err != nil {
		return err
	}
	data, sig, err := readManifest(pos[0], *sigFile)
	if err != nil {
		return err
	}
	var plan agent.Plan
	if *offline {
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		p, err := agent.PlanOffline(data, sig, cfg.Agent, cfg.DataDir, cfg.ParentHost())
		if err != nil {
			return fmt.Errorf("%s: %w", pos[0], err)
		}
		plan = *p
	} else {
		d, err := connectDaemon(&cf)
		if err != nil {
			return fmt.Errorf("%w (or use --offline)", err)
		}
		ctx, cancel := withTimeout(30 * time.Second)
		defer cancel()
		if err := d.do(ctx, "POST", "/deployments/check", manifestBody{string(data), string(sig)}, &plan); err != nil {
			return fmt.Errorf("%s: %w", pos[0], err)
		}
		if hasModules(&plan) {
			if msg := engineDown(d); msg != "" {
				plan.Warnings = append(plan.Warnings, msg+": the modules cannot start until it answers")
			}
		}
	}
	printPlan(stdout, &plan)
	return nil
}

func hasModules(p *agent.Plan) bool {
	for _, c := range p.Changes {
		if c.Kind == "module" && c.Action != agent.ActionRemove {
			return true
		}
	}
	return false
}

// engineDown returns "Docker engine unreachable at HOST (why)" when the
// running ledge cannot reach its Docker engine, else "".
func engineDown(d *daemon) string {
	ctx, cancel := withTimeout(10 * time.Second)
	defer cancel()
	var rep agent.Reported
	if d.do(ctx, "GET", "/deployments/current", nil, &rep) != nil || rep.Engine.Connected {
		return ""
	}
	return engineText(rep.Engine)
}

func engineText(e agent.EngineReport) string {
	host := e.Host
	if host == "" {
		host = "its address (agent.dockerHost, $DOCKER_HOST)"
	}
	msg := "Docker engine unreachable at " + host
	if e.Error != "" {
		msg += " (" + e.Error + ")"
	}
	return msg
}

func printPlan(w io.Writer, p *agent.Plan) {
	fmt.Fprintf(w, "deployment %q (%s, sha256 %.12s)", p.Version, p.Format, p.Digest)
	if p.Signer != "" {
		fmt.Fprintf(w, ", signed by %s", p.Signer)
	}
	if p.Current != "" {
		fmt.Fprintf(w, "; running now: %q", p.Current)
	}
	if p.Offline {
		fmt.Fprint(w, "; checked offline")
	}
	fmt.Fprintln(w)
	for _, note := range p.Notes {
		fmt.Fprintf(w, "note: %s\n", note)
	}
	for _, warn := range p.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, c := range p.Changes {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", c.Action, c.Kind, c.Name, c.Detail)
	}
	tw.Flush()
	if len(p.Changes) == 0 {
		fmt.Fprintln(w, "  nothing to do")
	}
	if len(p.Elevated) > 0 {
		fmt.Fprintln(w, "elevated container settings (allowed by agent.allowElevatedPermissions):")
		for _, e := range p.Elevated {
			fmt.Fprintf(w, "  module %s: %s %q %s\n", e.Module, e.Setting, e.Value, e.Why)
		}
	}
}

func deployApply(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("deploy apply", "[--sig FILE.sig] [--wait] [--timeout D] FILE", stderr)
	var cf configFlags
	cf.register(fs)
	sigFile := fs.String("sig", "", "detached signature (default FILE.sig when it exists)")
	wait := fs.Bool("wait", false, "follow the deployment until it converges, fails or is rolled back")
	timeout := fs.Duration("timeout", 10*time.Minute, "how long --wait follows it")
	pos, err := parseN(fs, args, 1)
	if err != nil {
		return err
	}
	data, sig, err := readManifest(pos[0], *sigFile)
	if err != nil {
		return err
	}
	d, err := connectDaemon(&cf)
	if err != nil {
		return err
	}
	ctx, cancel := withTimeout(30 * time.Second)
	defer cancel()
	var res agent.ApplyResult
	if err := d.do(ctx, "POST", "/deployments", manifestBody{string(data), string(sig)}, &res); err != nil {
		return fmt.Errorf("%s: %w", pos[0], err)
	}
	printPlan(stdout, res.Plan)
	fmt.Fprintf(stdout, "accepted as deployment %d\n", res.Deployment.ID)
	if !*wait {
		return nil
	}
	return followDeployment(d, res.Deployment.ID, *timeout, stdout)
}

// engineGrace is how long --wait waits for an unreachable Docker engine
// before it gives up (a dockerd that is starting answers within it).
const engineGrace = 15 * time.Second

// followDeployment prints the deployment's progress until it settles.
func followDeployment(d *daemon, id int64, timeout time.Duration, w io.Writer) error {
	deadline := time.Now().Add(timeout)
	last := ""
	var engineDownSince time.Time
	for time.Now().Before(deadline) {
		ctx, cancel := withTimeout(10 * time.Second)
		var rep agent.Reported
		err := d.do(ctx, "GET", "/deployments/current", nil, &rep)
		cancel()
		if err != nil {
			return err
		}
		switch {
		case rep.Engine.Connected || len(rep.Modules) == 0:
			engineDownSince = time.Time{}
		case engineDownSince.IsZero():
			engineDownSince = time.Now()
			fmt.Fprintln(w, engineText(rep.Engine)+": waiting for it")
		case time.Since(engineDownSince) > engineGrace:
			return fmt.Errorf("%s: the deployment is accepted and applies when the engine answers (start dockerd; `ledge deploy status` follows it)", engineText(rep.Engine))
		}
		dep := rep.Deployment
		line := fmt.Sprintf("%s: %s", dep.Version, dep.State)
		if ms := modulesLine(&rep); ms != "" {
			line += " | " + ms
		}
		if line != last {
			fmt.Fprintln(w, line)
			last = line
		}
		switch {
		case dep.ID == id && dep.State == agent.StateConverged:
			fmt.Fprintln(w, "converged")
			return nil
		case dep.ID == id && dep.State == agent.StateFailed:
			return fmt.Errorf("deployment failed: %s", dep.Reason)
		case dep.ID != id && dep.RolledBackFrom != nil && dep.RolledBackFrom.ID == id:
			return fmt.Errorf("deployment %s rolled back to %s: %s", dep.RolledBackFrom.Version, dep.Version, dep.RolledBackFrom.Reason)
		case dep.ID != id:
			return fmt.Errorf("deployment %d was replaced by %d (%s)", id, dep.ID, dep.Version)
		}
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("not converged after %s (ledge deploy status shows why)", timeout)
}

func modulesLine(rep *agent.Reported) string {
	names := slices.Sorted(maps.Keys(rep.Modules))
	var parts []string
	for _, n := range names {
		m := rep.Modules[n]
		s := n + " " + m.RuntimeStatus
		switch d := m.StatusDescription; {
		case m.Pull != nil && m.Pull.Total > 0:
			s += fmt.Sprintf(" (pull %.0f%% of %s)", m.Pull.Percent, bytesText(m.Pull.Total))
		case m.RuntimeStatus != "running" && d != "" && d != m.RuntimeStatus:
			// why it does not run: a failed pull and its next try, a
			// restart back-off, a refused create
			s += " (" + d + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

func bytesText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func deployStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("deploy status", "[--json]", stderr)
	var cf configFlags
	cf.register(fs)
	asJSON := fs.Bool("json", false, "print the whole reported state as JSON")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	d, err := connectDaemon(&cf)
	if err != nil {
		return err
	}
	ctx, cancel := withTimeout(10 * time.Second)
	defer cancel()
	var raw json.RawMessage
	if err := d.do(ctx, "GET", "/deployments/current", nil, &raw); err != nil {
		return err
	}
	if *asJSON {
		var v any
		json.Unmarshal(raw, &v)
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	var rep agent.Reported
	if err := json.Unmarshal(raw, &rep); err != nil {
		return err
	}
	switch c := rep.LastDesiredStatus.Code; {
	case rep.Deployment == nil && c == 417:
		fmt.Fprintln(stdout, "no deployment set yet (417; ledge deploy apply FILE)")
	case rep.Deployment == nil:
		fmt.Fprintf(stdout, "no deployment yet (ledge deploy apply FILE); last status: %s\n", desiredStatusText(rep.LastDesiredStatus))
	case c != 0 && c != 200:
		fmt.Fprintf(stdout, "last status: %s\n", desiredStatusText(rep.LastDesiredStatus))
	}
	if dep := rep.Deployment; dep != nil {
		fmt.Fprintf(stdout, "deployment %q (id %d, from %s, %s): %s\n", dep.Version, dep.ID, dep.Source, dep.Format, strings.TrimSpace(dep.State+" "+dep.Reason))
		if rb := dep.RolledBackFrom; rb != nil {
			fmt.Fprintf(stdout, "rolled back from %q: %s\n", rb.Version, rb.Reason)
		}
		if dep.Unsigned != "" {
			fmt.Fprintf(stdout, "unsigned: %s\n", dep.Unsigned)
		}
	}
	if s := rep.Signing; s != nil && s.Warning != "" {
		fmt.Fprintf(stdout, "warning: %s\n", s.Warning)
	}
	if r := rep.Rejected; r != nil {
		fmt.Fprintf(stdout, "last rejected (%s, %s): %s\n", r.Source, azureTimeText(r.At), r.Reason)
	}
	if !rep.Engine.Connected {
		fmt.Fprintln(stdout, engineText(rep.Engine))
	}
	if len(rep.Modules) == 0 && len(rep.Sections) == 0 {
		return nil // no table of nothing
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODULE\tSTATUS\tHUB\tRESTARTS\tEXIT\tIMAGE\tDETAIL")
	names := slices.Sorted(maps.Keys(rep.Modules))
	links := moduleHubLinks(raw)
	for _, n := range names {
		m := rep.Modules[n]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", n, m.RuntimeStatus, links[n].text(), m.RestartCount, m.ExitCode, m.Settings.Image, m.StatusDescription)
	}
	for _, n := range slices.Sorted(maps.Keys(rep.Sections)) {
		s := rep.Sections[n]
		fmt.Fprintf(tw, "[%s]\t%s\t\t\t\t\t%s\n", n, s.State, s.Detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if note := hubUnreachableNote(links); note != "" {
		fmt.Fprintln(stdout, note)
	}
	return nil
}

// desiredStatusText is an edgeAgent lastDesiredStatus in words, its code
// in brackets for whoever knows Azure's: "rejected: ... (400)".
func desiredStatusText(s agent.DesiredStatus) string {
	words := map[int]string{200: "ok", 400: "invalid deployment", 406: "not responding", 412: "unsupported schema version",
		417: "no deployment set yet", 500: "failed"}[s.Code]
	switch {
	case s.Description == "":
		return fmt.Sprintf("%s (%d)", cmp.Or(words, "status"), s.Code)
	case words == "" || strings.EqualFold(words, s.Description):
		return fmt.Sprintf("%s (%d)", s.Description, s.Code)
	}
	return fmt.Sprintf("%s: %s (%d)", words, s.Description, s.Code)
}

func deployHistory(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("deploy history", "[--limit N]", stderr)
	var cf configFlags
	cf.register(fs)
	limit := fs.Int("limit", 20, "how many")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	d, err := connectDaemon(&cf)
	if err != nil {
		return err
	}
	ctx, cancel := withTimeout(10 * time.Second)
	defer cancel()
	var h struct{ Deployments []agent.Deployment }
	if err := d.do(ctx, "GET", fmt.Sprintf("/deployments?limit=%d", *limit), nil, &h); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tVERSION\tSOURCE\tRECEIVED\tSTATE\tREASON")
	for _, dep := range h.Deployments {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", dep.ID, dep.Version, dep.Source, dep.ReceivedAt.Local().Format(time.DateTime), dep.State, dep.Reason)
	}
	return tw.Flush()
}

func deployRollback(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("deploy rollback", "", stderr)
	var cf configFlags
	cf.register(fs)
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	d, err := connectDaemon(&cf)
	if err != nil {
		return err
	}
	ctx, cancel := withTimeout(30 * time.Second)
	defer cancel()
	var res struct{ Deployment agent.Deployment }
	if err := d.do(ctx, "POST", "/deployments/rollback", nil, &res); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "rolling back to deployment %q (id %d)\n", res.Deployment.Version, res.Deployment.ID)
	return nil
}

func deploySign(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("deploy sign", "--key KEY FILE [--out FILE.sig] [--envelope]", stderr)
	keyFile := fs.String("key", "", "private key from `ledge keys gen` (required)")
	out := fs.String("out", "", "where to write (default FILE.sig, or FILE.signed.json with --envelope)")
	envelope := fs.Bool("envelope", false, "write one document holding the manifest and its signature (for an MQTT message or a single URL)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *keyFile == "" {
		fs.Usage()
		return errUsage
	}
	keyPEM, err := readLimited(*keyFile, maxSignature, "private key")
	if err != nil {
		return err
	}
	priv, err := agent.ParsePrivateKey(keyPEM)
	if err != nil {
		return fmt.Errorf("%s: %w", *keyFile, err)
	}
	data, err := readLimited(pos[0], manifest.MaxSize, "manifest")
	if err != nil {
		return err
	}
	// Signing vouches for the manifest; the appliance's privilege policy
	// is checked where it is applied.
	if _, err := agent.PlanOffline(data, nil, agent.Config{AllowElevatedPermissions: true}, "", "parent.invalid"); err != nil {
		return fmt.Errorf("%s does not validate, not signing it: %w", pos[0], err)
	}
	sig := agent.Sign(priv, data)
	var body []byte
	dest := *out
	if *envelope {
		if !utf8.Valid(data) {
			return errors.New("an envelope carries the manifest as text: it must be UTF-8")
		}
		body, _ = json.MarshalIndent(agent.Envelope{Manifest: string(data), Signature: &sig}, "", "  ")
		if dest == "" {
			dest = strings.TrimSuffix(pos[0], ".json") + ".signed.json"
		}
	} else {
		body, _ = json.MarshalIndent(sig, "", "  ")
		if dest == "" {
			dest = pos[0] + ".sig"
		}
	}
	if err := os.WriteFile(dest, append(body, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "signed %s with key %s: %s\n", pos[0], sig.KeyID, dest)
	return nil
}
