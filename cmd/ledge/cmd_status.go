package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"ledge/agent"
	"ledge/hub"
	"ledge/pipeline"
)

func init() {
	register("status", command{summary: "what the running ledge does: health, pipelines, modules, hub (--json)", run: statusCmd})
}

// statusReport is `ledge status --json`: what the API answers, one key
// per part ("error" under a part the daemon could not answer for).
type statusReport struct {
	DataDir    string          `json:"dataDir"`
	Health     json.RawMessage `json:"health"`
	System     json.RawMessage `json:"system"`
	Pipelines  json.RawMessage `json:"pipelines"`
	Deployment json.RawMessage `json:"deployment"`
	Hub        json.RawMessage `json:"hub"`
	// Upstream is the link to the upstream broker: in Hub too, and the
	// only word on it when the hub is off (a fleet device).
	Upstream json.RawMessage `json:"upstream"`
	// Problems is what fails, one line each (--check only).
	Problems *[]string `json:"problems,omitempty"`
}

func statusCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("status", "[--json]", stderr)
	usage := fs.Usage
	fs.Usage = func() {
		usage()
		fmt.Fprint(fs.Output(), statusExitCodes)
	}
	var cf configFlags
	cf.register(fs)
	asJSON := fs.Bool("json", false, "print everything as one JSON document, for scripts")
	check := fs.Bool("check", false, "for monitoring: list what fails (components, pipelines, actions, modules, models, upstream, disk), one line each, and exit 1 when anything does (without it: 1 only when a component is unhealthy)")
	if _, err := parseN(fs, args, 0); err != nil {
		return err
	}
	cfg, err := cf.load()
	if err != nil {
		return &exitCode{statusUnknown, err}
	}
	d, err := connectDaemon(&cf)
	if err != nil {
		if errors.Is(err, errNotRunning) {
			return &exitCode{statusNotRunning, err}
		}
		return &exitCode{statusUnknown, err}
	}
	ctx, cancel := withTimeout(15 * time.Second)
	defer cancel()
	rep := statusReport{DataDir: cfg.DataDir}
	var sysErr error
	get := func(path string) json.RawMessage {
		var raw json.RawMessage
		if err := d.do(ctx, "GET", path, nil, &raw); err != nil {
			if statusOf(err) == 0 && path == "/system" {
				sysErr = err
				return nil
			}
			b, _ := json.Marshal(map[string]string{"error": err.Error()})
			return b
		}
		return raw
	}
	rep.System = get("/system")
	if rep.System == nil {
		if errors.Is(sysErr, errNotRunning) {
			return &exitCode{statusNotRunning, sysErr}
		}
		return &exitCode{statusUnknown, fmt.Errorf("ledge at %s does not answer: %w", d.socket, sysErr)}
	}
	rep.Health = getHealth(ctx, d)
	rep.Pipelines = get("/pipelines")
	rep.Deployment = get("/deployments/current")
	rep.Hub = get("/hub")
	rep.Upstream = get("/upstream")
	var problems []string
	if *check {
		problems = statusProblems(&rep)
		if problems == nil {
			problems = []string{}
		}
		rep.Problems = &problems
	}
	switch {
	case *check && !*asJSON:
		if len(problems) == 0 {
			fmt.Fprintln(stdout, "OK: nothing fails")
		} else {
			fmt.Fprintf(stdout, "FAILING: %d problems\n", len(problems))
			for _, p := range problems {
				fmt.Fprintf(stdout, "  %s\n", p)
			}
		}
	case *asJSON:
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	default:
		printStatus(stdout, &rep)
	}
	if *check && healthOf(rep.Health) != "" && len(problems) > 0 {
		return &exitCode{code: statusFailing}
	}
	switch healthOf(rep.Health) {
	case "ok":
		return nil
	case "":
		return &exitCode{code: statusUnknown}
	default:
		return &exitCode{code: statusFailing}
	}
}

// The exit codes of `ledge status`, after LSB's `status` action (which
// uses 3 for "not running" and 4 for "unknown"); 2 stays the usage error
// every ledge command exits with.
const (
	statusFailing    = 1 // running, a component is unhealthy
	statusNotRunning = 3 // no ledge runs with that data dir
	statusUnknown    = 4 // ledge does not answer, or its health cannot be read
)

const statusExitCodes = `
Exit status:
  0  ledge runs and every component is healthy (with --check: nothing fails)
  1  ledge runs, a component is unhealthy (health FAILING; see its lines);
     with --check, anything fails: a component, a pipeline or one of its
     actions, a module, the models section, the upstream link, the disk
  2  bad flags
  3  ledge is not running (never started, stopped, or killed)
  4  unknown: ledge does not answer, its health cannot be read, or the
     config cannot be loaded
`

// healthOf returns the status of a /healthz answer ("ok", "failing"), or
// "" when it could not be read.
func healthOf(raw json.RawMessage) string {
	var h struct {
		Status string `json:"status"`
	}
	if partError(raw) != "" || json.Unmarshal(raw, &h) != nil {
		return ""
	}
	return h.Status
}

// getHealth reads /healthz (outside /api/v1; 503 when failing, with the
// same body).
func getHealth(ctx context.Context, d *daemon) json.RawMessage {
	var raw json.RawMessage
	err := d.doURL(ctx, "GET", "http://ledge/healthz", nil, &raw, true)
	if err != nil {
		b, _ := json.Marshal(map[string]string{"error": err.Error()})
		return b
	}
	return raw
}

// partError returns the error recorded for a part, or "".
func partError(raw json.RawMessage) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(raw, &e) == nil && e.Error != "" {
		return e.Error
	}
	return ""
}

func printStatus(w io.Writer, r *statusReport) {
	var sys struct {
		Version, DeviceID, Hostname, Uptime string
		Dev                                 bool
		CPUPercent                          float64
		LoadAvg                             []float64
		MemTotal, MemAvailable, ProcessRSS  uint64
		DiskTotal, DiskFree                 uint64
		DiskLow                             string
		TemperatureC                        *float64
		UncleanStop                         *struct {
			PID      int
			LastSeen time.Time
		}
	}
	json.Unmarshal(r.System, &sys)
	dev := ""
	if sys.Dev {
		dev = ", dev mode"
	}
	fmt.Fprintf(w, "ledge %s on %s (device %s), up %s%s\n", sys.Version, sys.Hostname, sys.DeviceID, sys.Uptime, dev)
	fmt.Fprintf(w, "data dir   %s\n", r.DataDir)
	if u := sys.UncleanStop; u != nil {
		fmt.Fprintf(w, "           the previous run (pid %d) did not stop cleanly (killed or crashed) at about %s\n", u.PID, u.LastSeen.Local().Format(time.DateTime))
	}

	var health struct {
		Status     string
		Components []struct{ Name, Status, Error string }
	}
	json.Unmarshal(r.Health, &health)
	var failing []string
	for _, c := range health.Components {
		if c.Status != "ok" {
			failing = append(failing, c.Name+": "+c.Error)
		}
	}
	switch {
	case partError(r.Health) != "":
		fmt.Fprintf(w, "health     unknown (%s)\n", partError(r.Health))
	case len(failing) == 0:
		fmt.Fprintf(w, "health     ok (%d components)\n", len(health.Components))
	default:
		fmt.Fprintf(w, "health     FAILING\n")
		for _, f := range failing {
			fmt.Fprintf(w, "           %s\n", f)
		}
	}
	temp := ""
	if sys.TemperatureC != nil {
		temp = fmt.Sprintf(", %.0f°C", *sys.TemperatureC)
	}
	load := ""
	if len(sys.LoadAvg) == 3 {
		load = fmt.Sprintf(", load %.2f %.2f %.2f", sys.LoadAvg[0], sys.LoadAvg[1], sys.LoadAvg[2])
	}
	fmt.Fprintf(w, "system     cpu %.0f%%%s, memory %s free of %s (ledge %s), disk %s free of %s%s\n",
		sys.CPUPercent, load, bytesText(int64(sys.MemAvailable)), bytesText(int64(sys.MemTotal)), bytesText(int64(sys.ProcessRSS)),
		bytesText(int64(sys.DiskFree)), bytesText(int64(sys.DiskTotal)), temp)
	if sys.DiskLow != "" {
		fmt.Fprintf(w, "           disk LOW: %s\n", sys.DiskLow)
	}

	printPipelines(w, r.Pipelines)
	printDeployment(w, r.Deployment)
	printHubSummary(w, r.Hub, r.Upstream)
}

func printPipelines(w io.Writer, raw json.RawMessage) {
	fmt.Fprintln(w)
	if e := partError(raw); e != "" {
		fmt.Fprintf(w, "pipelines  unknown (%s)\n", e)
		return
	}
	var list struct {
		Pipelines []pipeline.Stats `json:"pipelines"`
	}
	json.Unmarshal(raw, &list)
	ps := list.Pipelines
	if len(ps) == 0 {
		fmt.Fprintln(w, "pipelines  none (docs/pipelines.md; the Pipelines page adds one)")
		return
	}
	bad, acting := 0, 0
	for _, p := range ps {
		if p.State == pipeline.StateFailed || p.State == pipeline.StateBackoff {
			bad++
		} else if failingAction(p) != nil {
			acting++
		}
	}
	line := fmt.Sprintf("pipelines  %d, %d running, %d failing", len(ps), len(ps)-bad-countState(ps, pipeline.StateStopped, pipeline.StateEnded, pipeline.StateStarting, pipeline.StateWaiting), bad)
	if acting > 0 {
		line += fmt.Sprintf(", %d with a failing action", acting)
	}
	fmt.Fprintln(w, line)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  PIPELINE\tSTATE\tFPS IN/OUT\tMODEL\tREASON")
	for _, p := range ps {
		fps := "-"
		if p.FPSIn > 0 || p.FPSOut > 0 {
			fps = fmt.Sprintf("%.1f/%.1f", p.FPSIn, p.FPSOut)
		}
		model := p.Model
		if p.ModelVersion != "" {
			model += "@" + p.ModelVersion
		}
		if model == "" {
			model = "-"
		}
		reason, since := failingReason(p)
		// Since when stays visible however long the reason.
		reason = oneLine(reason, 100)
		if !since.IsZero() {
			reason += " (since " + since.Local().Format(time.TimeOnly) + ")"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", p.Name, p.State, fps, model, reason)
	}
	tw.Flush()
}

// failingReason is why p fails and since when: its own reason, else that
// of an action whose target is down (it runs, but its events do not get
// where they should).
func failingReason(p pipeline.Stats) (string, time.Time) {
	if a := failingAction(p); p.Reason == "" && a != nil {
		return "action " + a.Name + " failing: " + a.LastError, a.FailingSince
	}
	return p.Reason, p.FailingSince
}

// failingAction returns the first action of p whose target is down, or
// nil.
func failingAction(p pipeline.Stats) *pipeline.ActionStats {
	for i := range p.Actions {
		if p.Actions[i].Failing {
			return &p.Actions[i]
		}
	}
	return nil
}

func countState(ps []pipeline.Stats, states ...string) int {
	n := 0
	for _, p := range ps {
		for _, s := range states {
			if p.State == s {
				n++
			}
		}
	}
	return n
}

func printDeployment(w io.Writer, raw json.RawMessage) {
	fmt.Fprintln(w)
	if e := partError(raw); e != "" {
		fmt.Fprintf(w, "modules    unknown (%s)\n", e)
		return
	}
	var rep agent.Reported
	json.Unmarshal(raw, &rep)
	if dep := rep.Deployment; dep != nil {
		line := fmt.Sprintf("deployment %q (id %d, %s): %s", dep.Version, dep.ID, dep.Source, dep.State)
		if dep.Reason != "" {
			line += " - " + dep.Reason
		}
		fmt.Fprintln(w, line)
		if rb := dep.RolledBackFrom; rb != nil {
			fmt.Fprintf(w, "           rolled back from %q: %s\n", rb.Version, oneLine(rb.Reason, 160))
		}
	} else {
		fmt.Fprintln(w, "deployment none yet (ledge deploy apply FILE)")
	}
	// A manifest refused since the current deployment arrived (as the
	// agent's last desired status counts it).
	if r := rep.Rejected; r != nil && (rep.Deployment == nil || r.At > rep.Deployment.ReceivedAt) {
		fmt.Fprintf(w, "           manifest rejected (from %s at %s), the running deployment stays: %s\n", r.Source, azureTimeText(r.At), oneLine(r.Reason, 200))
	}
	if sec, ok := rep.Sections["models"]; ok && sec.State != agent.SectionReady {
		fmt.Fprintf(w, "models     %s: %s (ledge models list)\n", sec.State, oneLine(sec.Detail, 160))
	}
	if !rep.Engine.Connected {
		fmt.Fprintf(w, "           %s\n", engineText(rep.Engine))
	}
	if len(rep.Modules) == 0 {
		fmt.Fprintln(w, "modules    none")
		return
	}
	names := slices.Sorted(maps.Keys(rep.Modules))
	links := moduleHubLinks(raw)
	fmt.Fprintf(w, "modules    %d\n", len(names))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  MODULE\tSTATUS\tHUB\tRESTARTS\tIMAGE\tDETAIL")
	for _, n := range names {
		m := rep.Modules[n]
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\t%s\n", n, m.RuntimeStatus, links[n].text(), m.RestartCount, m.Settings.Image, oneLine(m.StatusDescription, 80))
	}
	tw.Flush()
	if note := hubUnreachableNote(links); note != "" {
		fmt.Fprintln(w, "  "+note)
	}
}

// hubLink is a module's connection to the hub in /deployments/current
// (web.ModuleHubLink): running does not mean connected.
type hubLink struct {
	Identity    string    `json:"identity"`
	Connected   bool      `json:"connected"`
	Since       time.Time `json:"since"`
	Seen        bool      `json:"seen"`
	Unreachable string    `json:"unreachable"` // why it cannot connect, when ledge knows
}

// hubUnreachableNote is the line below a module table that says which
// modules cannot connect to the hub and why, when the daemon knows ("" if
// none).
func hubUnreachableNote(links map[string]*hubLink) string {
	var names []string
	why := ""
	for _, n := range slices.Sorted(maps.Keys(links)) {
		if l := links[n]; l != nil && !l.Connected && l.Unreachable != "" {
			names = append(names, n)
			why = l.Unreachable
		}
	}
	if len(names) == 0 {
		return ""
	}
	return "modules " + strings.Join(names, ", ") + " cannot connect: " + why
}

// moduleHubLinks reads each module's hub link from a reported state (none
// without the hub).
func moduleHubLinks(raw json.RawMessage) map[string]*hubLink {
	var r struct {
		Modules map[string]struct {
			Hub *hubLink `json:"hub"`
		} `json:"modules"`
	}
	json.Unmarshal(raw, &r)
	out := map[string]*hubLink{}
	for n, m := range r.Modules {
		out[n] = m.Hub
	}
	return out
}

// text is the link for a table: "connected since 10:02:11", "not
// connected since ...", "-" without the hub.
func (l *hubLink) text() string {
	switch {
	case l == nil:
		return "-"
	case l.Connected:
		return "connected since " + l.Since.Local().Format(time.TimeOnly)
	case l.Seen:
		return "not connected since " + l.Since.Local().Format(time.TimeOnly)
	}
	return "never connected since ledge started " + l.Since.Local().Format(time.TimeOnly)
}

// printUpstreamLine prints the link to the upstream broker: its state,
// since when when it is not connected, and why.
func printUpstreamLine(w io.Writer, up hub.UpstreamStatus) {
	line := fmt.Sprintf("           upstream %s %s: %s", up.Mode, up.Broker, up.State)
	if up.State != "connected" && !up.Since.IsZero() {
		line += " since " + up.Since.Local().Format(time.DateTime)
	}
	if up.LastError != "" {
		line += " - " + up.LastError
	}
	fmt.Fprintln(w, line)
}

// printHubSummary prints the hub's lines of ledge status; without the hub,
// the upstream link's (up) when there is one.
func printHubSummary(w io.Writer, raw, up json.RawMessage) {
	fmt.Fprintln(w)
	if e := partError(raw); e != "" {
		fmt.Fprintf(w, "hub        %s\n", e)
		var st hub.UpstreamStatus
		if partError(up) == "" && json.Unmarshal(up, &st) == nil && st.Mode != "" {
			printUpstreamLine(w, st)
		}
		return
	}
	var st hub.Stats
	json.Unmarshal(raw, &st)
	fmt.Fprintf(w, "hub        %s, mqtt %s, mqtts %s; %d clients; in %.1f/s, out %.1f/s; queued %d messages (%s of %s)\n",
		st.Hostname, listenText(st.Ports.MQTTAddr, st.Ports.MQTT), listenText(st.Ports.MQTTSAddr, st.Ports.MQTTS), st.ClientsConnected, st.Rates.MQTTIn, st.Rates.MQTTOut,
		queued(st), bytesText(st.QueueBytes), bytesText(st.QueueQuota))
	if st.Upstream.Mode != "" {
		printUpstreamLine(w, st.Upstream)
		// Relays to the parent that are not well (the rest: ledge hub).
		for _, r := range st.Upstream.Relays {
			if r.State != "connected" || r.LastError != "" {
				fmt.Fprintf(w, "           relay %s: %s - %s\n", r.Identity, r.State, oneLine(orDash(r.LastError), 100))
			}
		}
	}
}

func queued(st hub.Stats) int {
	n := 0
	for _, q := range st.Queues {
		n += q.Depth
	}
	return n
}

// oneLine shortens s to one line of at most n characters.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// azureTimeText is a time of the agent's report (Azure's UTC
// 2006-01-02T15:04:05.0000000) as the CLI says times: local, to the second.
func azureTimeText(at string) string {
	t, err := time.Parse("2006-01-02T15:04:05.9999999", at)
	if err != nil {
		return at
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

// statusProblems lists what fails, one line each, for `ledge status
// --check`: a monitoring script wants one exit code for "all is well",
// where the default exit code follows the components' health only (a
// camera that is offline does not make ledge unhealthy: a restart would
// not bring it back).
func statusProblems(r *statusReport) []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, oneLine(fmt.Sprintf(format, args...), 300)) }
	if e := partError(r.Health); e != "" {
		add("health unknown: %s", e)
	} else {
		var h struct {
			Components []struct{ Name, Status, Error string }
		}
		json.Unmarshal(r.Health, &h)
		for _, c := range h.Components {
			if c.Status != "ok" {
				add("component %s: %s", c.Name, c.Error)
			}
		}
	}
	var sys struct{ DiskLow string }
	if json.Unmarshal(r.System, &sys) == nil && sys.DiskLow != "" {
		add("data disk low: %s", sys.DiskLow)
	}
	if e := partError(r.Pipelines); e != "" {
		add("pipelines unknown: %s", e)
	} else {
		var list struct{ Pipelines []pipeline.Stats }
		json.Unmarshal(r.Pipelines, &list)
		for _, p := range list.Pipelines {
			switch {
			case p.State == pipeline.StateFailed || p.State == pipeline.StateBackoff:
				add("pipeline %s %s: %s", p.Name, p.State, p.Reason)
			default:
				for _, a := range p.Actions {
					if a.Failing {
						add("pipeline %s: action %s failing: %s", p.Name, a.Name, a.LastError)
					}
				}
			}
		}
	}
	if e := partError(r.Deployment); e != "" {
		add("modules unknown: %s", e)
	} else {
		var rep agent.Reported
		json.Unmarshal(r.Deployment, &rep)
		if d := rep.Deployment; d != nil && d.State == agent.StateFailed {
			add("deployment %q failed: %s", d.Version, d.Reason)
		}
		for _, n := range slices.Sorted(maps.Keys(rep.Modules)) {
			switch m := rep.Modules[n]; m.RuntimeStatus {
			case agent.StatusBackoff, agent.StatusFailed, agent.StatusUnhealthy:
				add("module %s %s: %s", n, m.RuntimeStatus, m.StatusDescription)
			}
		}
		if sec, ok := rep.Sections["models"]; ok && sec.State == agent.SectionFailed {
			add("models failed: %s", sec.Detail)
		}
	}
	var up hub.UpstreamStatus
	if partError(r.Hub) == "" {
		var st hub.Stats
		json.Unmarshal(r.Hub, &st)
		up = st.Upstream
	} else if partError(r.Upstream) == "" {
		json.Unmarshal(r.Upstream, &up)
	}
	if up.Mode != "" {
		if up.State != "connected" {
			add("upstream %s %s: %s", up.Broker, up.State, orDash(up.LastError))
		}
		for _, rl := range up.Relays {
			if rl.State != "connected" {
				add("upstream relay %s %s: %s", rl.Identity, rl.State, orDash(rl.LastError))
			}
		}
	}
	return out
}
