package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"ledge/pipeline"
)

func init() {
	register("pipelines", command{summary: "list, add, replace, remove, stop and start pipelines", run: pipelinesCmd})
}

const pipelinesUsage = `Usage: ledge pipelines <subcommand> [flags]

Subcommands:
  list                 pipelines with their owner, state, frame rates, model and reason (--json)
  show NAME            one pipeline: state, stage latencies, counters and its spec (--json)
  add FILE             add a pipeline from a spec file (YAML or JSON, - for stdin)
  replace NAME FILE    replace a pipeline the dashboard or the API added (or add it)
  rm NAME              remove a pipeline the dashboard or the API added
  stop NAME            stop a pipeline (until start, a change of the pipelines, or a restart)
  start NAME           start a stopped pipeline
  reload NAME          restart a pipeline (the camera is opened again, the model kept)

Pipelines from ledge.yaml or a deployment are changed there, not here.
See docs/pipelines.md for the spec.
`

func pipelinesCmd(args []string, stdout, stderr io.Writer) error {
	return subcommands("pipelines", pipelinesUsage, map[string]func([]string, io.Writer, io.Writer) error{
		"list":    pipelinesList,
		"show":    pipelinesShow,
		"add":     pipelinesPut("add", "FILE", "POST"),
		"replace": pipelinesPut("replace", "NAME FILE", "PUT"),
		"rm":      pipelinesAction("rm"),
		"stop":    pipelinesAction("stop"),
		"start":   pipelinesAction("start"),
		"reload":  pipelinesAction("reload"),
	})(args, stdout, stderr)
}

// cliPipeline is what GET /pipelines/{name} answers.
type cliPipeline struct {
	pipeline.Stats
	Owner string          `json:"owner"`
	Spec  json.RawMessage `json:"spec,omitempty"`
}

func pipelinesList(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("pipelines list", "[--json]", stderr)
	var cf configFlags
	cf.register(fs)
	asJSON := fs.Bool("json", false, "print the pipelines as JSON")
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
		Pipelines []cliPipeline `json:"pipelines"`
	}
	if err := d.do(ctx, "GET", "/pipelines", nil, &res); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, res.Pipelines)
	}
	if len(res.Pipelines) == 0 {
		fmt.Fprintln(stdout, "no pipelines (add one: ledge pipelines add FILE; docs/pipelines.md)")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PIPELINE\tOWNER\tSTATE\tFPS IN/OUT\tMODEL\tREASON")
	for _, p := range res.Pipelines {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, orDash(p.Owner), p.State, fpsText(p.Stats), modelText(p.Stats), reasonText(p.Stats, 100))
	}
	return tw.Flush()
}

func fpsText(p pipeline.Stats) string {
	if p.FPSIn == 0 && p.FPSOut == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f/%.1f", p.FPSIn, p.FPSOut)
}

func modelText(p pipeline.Stats) string {
	if p.Model == "" {
		return "-"
	}
	if p.ModelVersion != "" {
		return p.Model + "@" + p.ModelVersion
	}
	return p.Model
}

// reasonText is why p fails, shortened to n characters (0: whole), and
// since when.
func reasonText(p pipeline.Stats, n int) string {
	r, since := failingReason(p)
	if n > 0 {
		r = oneLine(r, n)
	}
	if !since.IsZero() {
		r += " (since " + since.Local().Format(time.DateTime) + ")"
	}
	return orDash(r)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func pipelinesShow(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("pipelines show", "NAME [--json]", stderr)
	var cf configFlags
	cf.register(fs)
	asJSON := fs.Bool("json", false, "print the pipeline as JSON")
	pos, err := parseN(fs, args, 1)
	if err != nil {
		return err
	}
	d, err := connectDaemon(&cf)
	if err != nil {
		return err
	}
	ctx, cancel := withTimeout(30 * time.Second)
	defer cancel()
	var raw json.RawMessage
	if err := d.do(ctx, "GET", "/pipelines/"+url.PathEscape(pos[0]), nil, &raw); err != nil {
		return err
	}
	if *asJSON {
		var b bytes.Buffer
		json.Indent(&b, raw, "", "  ")
		fmt.Fprintln(stdout, b.String())
		return nil
	}
	var p cliPipeline
	if err := json.Unmarshal(raw, &p); err != nil {
		return fmt.Errorf("GET /pipelines/%s: bad answer: %w", pos[0], err)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "pipeline\t%s (owner: %s)\n", p.Name, orDash(p.Owner))
	fmt.Fprintf(tw, "state\t%s\n", p.State)
	if r := reasonText(p.Stats, 0); r != "-" {
		fmt.Fprintf(tw, "reason\t%s\n", r)
	}
	fmt.Fprintf(tw, "fps in/out\t%s\n", fpsText(p.Stats))
	fmt.Fprintf(tw, "model\t%s\n", modelText(p.Stats))
	fmt.Fprintf(tw, "frames\t%d in, %d out, %d dropped, %d skipped (motion), %d skipped (rate)\n", p.FramesIn, p.FramesOut, p.Dropped, p.SkippedMotion, p.SkippedRate)
	fmt.Fprintf(tw, "detections\t%d (%d errors)\n", p.Detections, p.DetectErrors)
	fmt.Fprintf(tw, "events\t%d (%d dropped)\n", p.Events, p.EventsDropped)
	tw.Flush()
	if len(p.Spec) > 0 {
		var b bytes.Buffer
		json.Indent(&b, p.Spec, "  ", "  ")
		fmt.Fprintf(stdout, "spec (passwords masked):\n  %s\n", b.String())
	}
	return nil
}

// pipelinesPut adds (POST) or replaces (PUT) a pipeline from a spec file.
func pipelinesPut(name, usage, method string) func([]string, io.Writer, io.Writer) error {
	return func(args []string, stdout, stderr io.Writer) error {
		fs := newFlagSet("pipelines "+name, usage, stderr)
		var cf configFlags
		cf.register(fs)
		n := len(strings.Fields(usage))
		pos, err := parseN(fs, args, n)
		if err != nil {
			return err
		}
		file := pos[n-1]
		var body []byte
		if file == "-" {
			file = "/dev/stdin"
		}
		if body, err = readLimited(file, maxSpecBytes, "pipeline spec"); err != nil {
			return err
		}
		d, err := connectDaemon(&cf)
		if err != nil {
			return err
		}
		ctx, cancel := withTimeout(60 * time.Second)
		defer cancel()
		path := "/pipelines"
		if method == "PUT" {
			path += "/" + url.PathEscape(pos[0])
		}
		var p cliPipeline
		if err := d.do(ctx, method, path, body, &p); err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		fmt.Fprintf(stdout, "pipeline %s: %s\n", p.Name, p.State)
		return nil
	}
}

// maxSpecBytes bounds a pipeline spec file, as the API does its bodies.
const maxSpecBytes = 1 << 20

// pipelinesAction runs `ledge pipelines ACTION NAME`: rm is DELETE
// /pipelines/NAME, the others POST /pipelines/NAME/ACTION.
func pipelinesAction(action string) func([]string, io.Writer, io.Writer) error {
	return func(args []string, stdout, stderr io.Writer) error {
		fs := newFlagSet("pipelines "+action, "NAME", stderr)
		var cf configFlags
		cf.register(fs)
		pos, err := parseN(fs, args, 1)
		if err != nil {
			return err
		}
		d, err := connectDaemon(&cf)
		if err != nil {
			return err
		}
		ctx, cancel := withTimeout(60 * time.Second)
		defer cancel()
		path := "/pipelines/" + url.PathEscape(pos[0])
		if action == "rm" {
			if err := d.do(ctx, "DELETE", path, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "pipeline %s removed\n", pos[0])
			return nil
		}
		var p cliPipeline
		if err := d.do(ctx, "POST", path+"/"+action, nil, &p); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "pipeline %s: %s\n", p.Name, p.State)
		return nil
	}
}
