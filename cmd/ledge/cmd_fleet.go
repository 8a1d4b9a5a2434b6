package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"ledge/agent"
	"ledge/agent/manifest"
	"ledge/hub/fleet"
	"ledge/internal/redact"
)

func init() {
	register("fleet", command{summary: "target and roll out deployments across many appliances through an MQTT broker", run: subcommands("fleet", fleetUsage, map[string]func([]string, io.Writer, io.Writer) error{
		"devices": fleetDevices,
		"deploy":  fleetDeploy,
		"status":  fleetStatus,
		"pause":   func(a []string, o, e io.Writer) error { return fleetSetState(a, o, e, "pause", fleet.StatePaused) },
		"resume":  func(a []string, o, e io.Writer) error { return fleetSetState(a, o, e, "resume", fleet.StateActive) },
		"rollback": func(a []string, o, e io.Writer) error {
			return fleetSetState(a, o, e, "rollback", fleet.StateRolledBack)
		},
		"delete":     fleetDelete,
		"controller": fleetController,
	})})
}

const fleetUsage = `Usage: ledge fleet COMMAND [flags]

Fleet deployments on the MQTT broker your appliances report to (docs/fleet.md):

  devices [--where COND]          list devices: id, tags, online, deployment, state, models, last seen
  deploy NAME FILE --target COND [--priority N] [--waves 1,10%,100%] [--soak 5m] [--abort-after 5%]
                                  sign and publish a fleet deployment
  status [NAME]                   targeted, applied, converged, failed, pending per wave (no NAME: every deployment)
  pause NAME | resume NAME        stop giving a deployment to more devices, and go on
  rollback NAME                   take a deployment back: its devices get what they had
  delete NAME                     delete a deployment: its devices take on their next deployment by
                                  priority; those no other deployment targets keep what they run
  controller [--resend 15s]       run the rollouts (keep one or more running; one acts at a time)

Every command takes --broker URL (repeat for a cluster's nodes), --username, --ca, and the
fleet key --key FILE (from 'ledge keys gen'; the appliances trust it in agent.trustedKeys);
the password comes from $LEDGE_FLEET_PASSWORD. $LEDGE_FLEET_BROKER, $LEDGE_FLEET_USERNAME,
$LEDGE_FLEET_CA and $LEDGE_FLEET_KEY set the defaults. --prefix (default ledge) must match the
appliances' agent.sources.mqtt.topic (<prefix>/{device}/deployment).
`

// fleetFlags are the connection and key flags of every fleet command.
type fleetFlags struct {
	brokers  stringList
	username string
	ca       string
	key      string
	trust    stringList
	prefix   string
	json     bool
}

// stringList is a repeatable flag; a value may hold several, comma-separated.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*s = append(*s, p)
		}
	}
	return nil
}

func (f *fleetFlags) register(fs *flag.FlagSet) {
	fs.Var(&f.brokers, "broker", "broker URL, e.g. ssl://broker:8883 (repeat, or comma-separate, for a cluster's nodes; default $LEDGE_FLEET_BROKER)")
	fs.StringVar(&f.username, "username", os.Getenv("LEDGE_FLEET_USERNAME"), "broker user (password from $LEDGE_FLEET_PASSWORD)")
	fs.StringVar(&f.ca, "ca", os.Getenv("LEDGE_FLEET_CA"), "CA file of the broker's certificate")
	fs.StringVar(&f.key, "key", os.Getenv("LEDGE_FLEET_KEY"), "fleet private key (ledge keys gen): signs definitions and the manifests devices get")
	fs.Var(&f.trust, "trust", "more public keys definitions may be signed with (the --key's own is always trusted)")
	fs.StringVar(&f.prefix, "prefix", "ledge", "topic prefix (the appliances' agent.sources.mqtt.topic is <prefix>/{device}/deployment)")
	fs.BoolVar(&f.json, "json", false, "print JSON")
}

// keys are the fleet's signing key (nil without --key) and trusted keys.
type fleetKeys struct {
	priv    ed25519.PrivateKey
	trusted []agent.TrustedKey
}

func (f *fleetFlags) keys(needPrivate bool) (*fleetKeys, error) {
	k := &fleetKeys{}
	entries := slices.Clone([]string(f.trust))
	if f.key != "" {
		pemData, err := os.ReadFile(f.key)
		if err != nil {
			return nil, fmt.Errorf("fleet key: %w", err)
		}
		if k.priv, err = agent.ParsePrivateKey(pemData); err != nil {
			return nil, fmt.Errorf("fleet key %s: %w", f.key, err)
		}
		pub := k.priv.Public().(ed25519.PublicKey)
		entries = append(entries, "ed25519:"+b64(pub))
	}
	if needPrivate && k.priv == nil {
		return nil, errors.New("the fleet key is required (--key FILE or $LEDGE_FLEET_KEY; make one with `ledge keys gen --out fleet` and trust fleet.pub in the appliances' agent.trustedKeys)")
	}
	if len(entries) == 0 {
		return nil, errors.New("no key to check definitions with: pass --key FILE or --trust PUBKEY")
	}
	var err error
	if k.trusted, err = agent.ParseTrustedKeys(entries); err != nil {
		return nil, fmt.Errorf("--trust: %w", err)
	}
	return k, nil
}

// Sign implements fleet.Signer.
func (k *fleetKeys) Sign(data []byte) (json.RawMessage, error) {
	s := agent.Sign(k.priv, data)
	return json.Marshal(s)
}

// Verify implements fleet.Verifier.
func (k *fleetKeys) Verify(data []byte, sig json.RawMessage) (string, error) {
	s, err := agent.ParseSignature(sig)
	if err != nil {
		return "", err
	}
	return agent.Verify(k.trusted, data, s)
}

// Seal implements fleet.Sealer: the manifest with the device's version,
// signed, in the envelope the agent's MQTT source opens.
func (k *fleetKeys) Seal(m []byte, version string) ([]byte, string, error) {
	stamped, err := manifest.WithVersion(m, version)
	if err != nil {
		return nil, "", err
	}
	sig := agent.Sign(k.priv, stamped)
	payload, err := json.Marshal(agent.Envelope{Manifest: string(stamped), Signature: &sig})
	return payload, agent.Digest(stamped), err
}

// brokerURLs are --broker's, else $LEDGE_FLEET_BROKER's.
func (f *fleetFlags) brokerURLs() []string {
	brokers := []string(f.brokers)
	if len(brokers) == 0 {
		for _, b := range strings.Split(os.Getenv("LEDGE_FLEET_BROKER"), ",") {
			if b = strings.TrimSpace(b); b != "" {
				brokers = append(brokers, b)
			}
		}
	}
	return brokers
}

func (f *fleetFlags) dial(ctx context.Context, clientID string, will bool, log *slog.Logger) (*fleet.Conn, error) {
	brokers := f.brokerURLs()
	if len(brokers) == 0 {
		return nil, errors.New("no broker: pass --broker URL or set $LEDGE_FLEET_BROKER")
	}
	topics := fleet.Topics{Prefix: f.prefix}
	cfg := fleet.ConnConfig{URLs: brokers, Username: f.username, Password: os.Getenv("LEDGE_FLEET_PASSWORD"), CAFile: f.ca,
		ClientID: clientID, Topics: topics, ConnectTimeout: 15 * time.Second, Log: log}
	if will {
		cfg.WillTopic, cfg.WillPayload = topics.Controller(clientID), fleet.OfflinePayload
		cfg.OnConnect = func(c *fleet.Conn) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c.Publish(ctx, topics.Controller(clientID), fleet.OnlinePayload(), true)
		}
	}
	conn, err := fleet.Dial(ctx, cfg)
	if errors.Is(err, fleet.ErrRefused) {
		who := "no username"
		if f.username != "" {
			who = "user " + f.username
		}
		return nil, fmt.Errorf("%w; check the broker user (%s: --username or $LEDGE_FLEET_USERNAME) and its password ($LEDGE_FLEET_PASSWORD)", err, who)
	}
	return conn, err
}

func cliID(what string) string {
	host, _ := os.Hostname()
	return fmt.Sprintf("ledge-fleet-%s-%s-%d-%d", what, host, os.Getpid(), time.Now().UnixNano()%1_000_000)
}

// fleetSession is a parsed command with its connection and snapshot.
type fleetSession struct {
	flags fleetFlags
	keys  *fleetKeys
	conn  *fleet.Conn
	snap  *fleet.Snapshot
	pos   []string
}

// openFleet parses a command's flags, has check (if any) look at its
// arguments, and only then connects: what is wrong on the command line
// is said without waiting for the broker.
func openFleet(name, synopsis string, args []string, stderr io.Writer, needPrivate bool, extra func(*flag.FlagSet), check func(pos []string) error) (*fleetSession, error) {
	fs := newFlagSet("fleet "+name, synopsis, stderr)
	s := &fleetSession{}
	s.flags.register(fs)
	if extra != nil {
		extra(fs)
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return nil, err
	}
	s.pos = pos
	if check != nil {
		if err := check(pos); err != nil {
			return nil, err
		}
	}
	if s.keys, err = s.flags.keys(needPrivate); err != nil {
		return nil, err
	}
	// A minute: time to pass over a cluster node that does not serve
	// its retained messages, or one that refuses subscriptions for a
	// while after another node died.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Warnings (a broker node passed over) go to stderr.
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if s.conn, err = s.flags.dial(ctx, cliID(name), false, log); err != nil {
		return nil, err
	}
	s.snap = s.conn.View().Snapshot(s.keys)
	return s, nil
}

func fleetDevices(args []string, stdout, stderr io.Writer) error {
	var where string
	var filter func([]byte) bool
	s, err := openFleet("devices", "[--where COND]", args, stderr, false, func(fs *flag.FlagSet) {
		fs.StringVar(&where, "where", "", "only devices matching a condition, e.g. tags.site = 'berlin'")
	}, func(pos []string) (err error) {
		if len(pos) != 0 {
			return errors.New("usage: ledge fleet devices [--where COND]")
		}
		if where != "" {
			if filter, err = fleet.Where(where); err != nil {
				return fmt.Errorf("--where: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer s.conn.Close()
	rows := fleet.Rows(s.snap, filter)
	if where != "" && len(rows) == 0 && len(s.snap.Devices) > 0 {
		fmt.Fprintf(stderr, noMatchNote, len(s.snap.Devices), "--where")
	}
	if s.flags.json {
		return writeJSON(stdout, rows)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTAGS\tONLINE\tDEPLOYMENT\tSTATE\tMODELS\tLAST SEEN")
	for _, r := range rows {
		online := "no"
		if r.Online {
			online = "yes"
		}
		state := r.State
		if r.Reason != "" {
			state += ": " + r.Reason
		}
		dep := r.Deployment
		if r.Deleted != "" {
			dep = r.Deleted + " (deleted)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, kv(r.Tags), online, dash(dep), dash(state), dash(kvAt(r.Models)), ago(r.LastSeen))
	}
	tw.Flush()
	fmt.Fprintf(stdout, "%d devices\n", len(rows))
	return nil
}

func kv(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return dash(strings.Join(parts, ","))
}

func kvAt(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"@"+m[k])
	}
	return strings.Join(parts, ",")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func fleetDeploy(args []string, stdout, stderr io.Writer) error {
	var target, waves, abort string
	var priority int
	var soak time.Duration
	var def *fleet.Definition
	var w []string
	s, err := openFleet("deploy", "NAME FILE --target COND [--priority N] [--waves 1,10%,100%] [--soak 5m] [--abort-after 5%]", args, stderr, true, func(fs *flag.FlagSet) {
		fs.StringVar(&target, "target", "", "target condition over tags and reported properties, e.g. tags.site = 'berlin' AND tags.hw = 'pi5' (required)")
		fs.IntVar(&priority, "priority", 0, "the highest priority wins on a device several deployments target")
		fs.StringVar(&waves, "waves", "100%", "cumulative wave sizes: counts or percents of the targeted devices")
		fs.DurationVar(&soak, "soak", 0, "how long a wave stays converged before the next starts")
		fs.StringVar(&abort, "abort-after", "", "abort and roll back once this many devices failed: a count or a percent of those given it")
	}, func(pos []string) error {
		if len(pos) != 2 {
			return errors.New("usage: ledge fleet deploy NAME FILE --target COND (see ledge fleet -h)")
		}
		if target == "" {
			return errors.New("--target is required: a condition over the devices' tags and reported properties, e.g. --target \"tags.site = 'berlin'\" (--target true: every device)")
		}
		name, file := pos[0], pos[1]
		data, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		// Check it as a device will: it parses, and it takes a version.
		if _, err := agent.PlanOffline(data, nil, agent.Config{AllowElevatedPermissions: true}, "", "parent.invalid"); err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		if _, err := manifest.WithVersion(data, fleet.NextVersion(time.Now(), "", name)); err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		if w, err = fleet.ParseWaves(waves); err != nil {
			return fmt.Errorf("--waves: %w", err)
		}
		def = &fleet.Definition{Name: name, Generation: 1, Created: time.Now().UTC(), Target: target, Priority: priority,
			Rollout: fleet.Policy{Waves: w, Soak: fleet.Duration(soak), AbortAfter: abort}, State: fleet.StateActive, Manifest: string(data)}
		return asFlags(def.Validate())
	})
	if err != nil {
		return err
	}
	defer s.conn.Close()
	name := def.Name
	def.Generation = fleet.NextGeneration(s.snap, name)
	if old := s.snap.Definitions[name]; old != nil {
		def.Created = old.Created
	} else if why, bad := s.snap.Invalid[name]; bad {
		fmt.Fprintf(stderr, "replacing a refused definition of %s (%s)\n", name, why)
	}
	// A deleted name deployed again is a new deployment (Created: now),
	// its generation above the tombstone's.
	if err := publishDefinition(s, def); err != nil {
		return err
	}
	// What it matches, and where another deployment outranks it (as the
	// controller will decide: this one in force with the others).
	n, outranked, by := 0, 0, map[string]bool{}
	noneVerify := len(s.snap.Definitions)+len(s.snap.Deleted) == 0
	s.snap.Definitions[name] = def
	for _, id := range s.snap.DeviceIDs() {
		if d := s.snap.Devices[id]; d.Doc != nil && def.Matches(d.Doc) {
			n++
			if other := fleet.Desired(s.snap, d); other != nil && other != def {
				outranked++
				by[other.Name] = true
			}
		}
	}
	held := ""
	if outranked > 0 {
		held = fmt.Sprintf(", %d of them held by a higher priority (%s)", outranked, strings.Join(slices.Sorted(maps.Keys(by)), ", "))
	}
	if s.flags.json {
		writeJSON(stdout, map[string]any{"name": name, "generation": def.Generation, "matches": n, "outranked": outranked, "waves": w, "soak": soak.String(), "abortAfter": abort})
	} else {
		fmt.Fprintf(stdout, "deployment %s generation %d published: its target matches %d devices now%s; waves %s, soak %s, abort after %s\n",
			name, def.Generation, n, held, strings.Join(w, ","), soak, dash(abort))
	}
	if n == 0 && len(s.snap.Devices) > 0 {
		fmt.Fprintf(stderr, noMatchNote, len(s.snap.Devices), "--target")
	}
	// The controllers' key is not known here; deployments on the broker
	// that all fail to verify with this one say it is not theirs.
	if others := slices.Sorted(maps.Keys(s.snap.Invalid)); noneVerify && len(others) > 0 {
		fmt.Fprintf(stderr, "note: none of the %d deployments on the broker verifies with this key (%s: %s); if --key is not the fleet key the controllers hold, they refuse this one too\n",
			len(others), others[0], s.snap.Invalid[others[0]])
	}
	return nil
}

// noMatchNote follows a condition that matches none of the devices: what
// usually makes that.
const noMatchNote = "note: none of the %d devices matches %s; tag values are texts (tags.line = '3', not 3), a word without quotes is a path (tags.site = 'berlin', not berlin); ledge fleet devices --json shows what conditions read\n"

// unknownDeployment is the error for a name no deployment has, naming
// those there are.
func unknownDeployment(s *fleetSession, name string) error {
	if s.snap.IsDeleted(name) {
		return fmt.Errorf("fleet deployment %q was deleted; ledge fleet deploy %s makes it again", name, name)
	}
	names := slices.Sorted(maps.Keys(s.snap.Definitions))
	if len(names) == 0 {
		return fmt.Errorf("no fleet deployment %q: the broker holds none under %s/fleet/deployments/ (--prefix)", name, s.flags.prefix)
	}
	return fmt.Errorf("no fleet deployment %q; there are: %s", name, strings.Join(names, ", "))
}

// oneName checks a command's one NAME argument.
func oneName(usage string) func([]string) error {
	return func(pos []string) error {
		if len(pos) != 1 {
			return errors.New(usage)
		}
		return nil
	}
}

// definitionFlags are the flags (or argument) that set each field of a
// definition, for its errors.
var definitionFlags = []struct{ field, flag string }{
	{"name: ", "NAME "}, {"target: ", "--target: "}, {"priority: ", "--priority: "},
	{"rollout.waves", "--waves"}, {"rollout.abortAfter: ", "--abort-after: "}, {"manifest: ", "FILE: "},
}

// asFlags words a definition's errors by the flags that set its fields
// (rollout.waves[1]: ... is --waves: ...).
func asFlags(err error) error {
	if err == nil {
		return nil
	}
	lines := strings.Split(err.Error(), "\n")
	for i, l := range lines {
		for _, f := range definitionFlags {
			if rest, ok := strings.CutPrefix(l, f.field); ok {
				if f.field == "rollout.waves" {
					_, rest, _ = strings.Cut(rest, ": ")
					rest = ": " + rest
				}
				lines[i] = f.flag + rest
				break
			}
		}
	}
	return errors.New(strings.Join(lines, "\n"))
}

func publishDefinition(s *fleetSession, def *fleet.Definition) error {
	payload, err := fleet.Seal(def, s.keys)
	if err != nil {
		return err
	}
	if len(payload) > fleet.MaxDefinitionSize {
		return fmt.Errorf("the definition is %d bytes, over %d", len(payload), fleet.MaxDefinitionSize)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return s.conn.Publish(ctx, fleet.Topics{Prefix: s.flags.prefix}.Definition(def.Name), payload, true)
}

func fleetSetState(args []string, stdout, stderr io.Writer, verb, state string) error {
	s, err := openFleet(verb, "NAME", args, stderr, true, nil, oneName("usage: ledge fleet "+verb+" NAME"))
	if err != nil {
		return err
	}
	defer s.conn.Close()
	name := s.pos[0]
	def := s.snap.Definitions[name]
	if def == nil {
		if why, ok := s.snap.Invalid[name]; ok {
			return fmt.Errorf("deployment %s is refused: %s", name, why)
		}
		return unknownDeployment(s, name)
	}
	aborted := false
	if r := s.snap.Rollouts[name]; r != nil && r.Phase == fleet.PhaseAborted && r.Generation == def.Generation {
		aborted = true
	}
	if def.State == state && !(verb == "resume" && aborted) {
		if s.flags.json {
			return writeJSON(stdout, map[string]any{"name": name, "state": state, "generation": def.Generation, "changed": false})
		}
		fmt.Fprintf(stdout, "deployment %s is already %s\n", name, state)
		return nil
	}
	if def.State == fleet.StateRolledBack {
		return fmt.Errorf("deployment %s was rolled back: deploy it again to roll it out", name)
	}
	next := *def
	next.State, next.Generation = state, fleet.NextGeneration(s.snap, name)
	if err := publishDefinition(s, &next); err != nil {
		return err
	}
	if s.flags.json {
		return writeJSON(stdout, map[string]any{"name": name, "state": state, "generation": next.Generation, "changed": true})
	}
	fmt.Fprintf(stdout, "deployment %s: %s (generation %d); the controller acts on it\n", name, state, next.Generation)
	return nil
}

// fleetDelete publishes a deployment's signed tombstone (as Azure IoT
// Hub deletes a deployment: its devices take on their next highest
// priority deployment; those no other targets keep what they run), then
// its rollout record as deleted at the tombstone's generation. The
// tombstone first: a delete cut short after it is finished by the
// controller.
func fleetDelete(args []string, stdout, stderr io.Writer) error {
	s, err := openFleet("delete", "NAME", args, stderr, true, nil, oneName("usage: ledge fleet delete NAME"))
	if err != nil {
		return err
	}
	defer s.conn.Close()
	name := s.pos[0]
	def := s.snap.Definitions[name]
	created := time.Now().UTC()
	switch tomb := s.snap.Deleted[name]; {
	case def != nil:
		created = def.Created
	case tomb != nil:
		// Already deleted; the rollout record made whole if a delete was
		// cut short.
		if r := s.snap.Rollouts[name]; r == nil || r.Phase != fleet.PhaseDeleted || r.Generation != tomb.Generation {
			if err := publishRollout(s, fleet.DeletedRollout(name, tomb.Generation, time.Now(), "")); err != nil {
				return err
			}
		}
		if s.flags.json {
			return writeJSON(stdout, map[string]any{"name": name, "state": fleet.StateDeleted, "generation": tomb.Generation, "changed": false})
		}
		fmt.Fprintf(stdout, "deployment %s is already deleted (generation %d)\n", name, tomb.Generation)
		return nil
	default:
		why, refused := s.snap.Invalid[name]
		if !refused {
			return unknownDeployment(s, name)
		}
		// A refused definition (a bad signature, a replay) is deleted too:
		// the tombstone goes in its place.
		fmt.Fprintf(stderr, "deleting a refused definition of %s (%s)\n", name, why)
	}
	// Above the definition's generation: taken before it leaves the
	// snapshot below.
	tomb := fleet.Tombstone(name, fleet.NextGeneration(s.snap, name), created)
	// What the devices given it do once it is gone, as the controller
	// will decide it.
	var given []string
	for _, id := range s.snap.DeviceIDs() {
		if a := s.snap.Devices[id].Assignment; a != nil && a.Deployment == name {
			given = append(given, id)
		}
	}
	delete(s.snap.Definitions, name)
	next, keep := map[string]int{}, 0
	for _, id := range given {
		if d := fleet.Desired(s.snap, s.snap.Devices[id]); d != nil {
			next[d.Name]++
		} else {
			keep++
		}
	}
	if err := publishDefinition(s, tomb); err != nil {
		return err
	}
	if err := publishRollout(s, fleet.DeletedRollout(name, tomb.Generation, time.Now(), "")); err != nil {
		return fmt.Errorf("deployment %s deleted, its rollout record not (the controller writes it): %w", name, err)
	}
	if s.flags.json {
		return writeJSON(stdout, map[string]any{"name": name, "state": fleet.StateDeleted, "generation": tomb.Generation, "changed": true,
			"devices": len(given), "next": next, "keep": keep})
	}
	if len(given) == 0 {
		fmt.Fprintf(stdout, "deployment %s deleted (generation %d): no device had it\n", name, tomb.Generation)
		return nil
	}
	var to []string
	for _, n := range slices.Sorted(maps.Keys(next)) {
		to = append(to, fmt.Sprintf("%s: %d", n, next[n]))
	}
	moving := len(given) - keep
	keeps := fmt.Sprintf("%d keep what they run", keep)
	if keep == 1 {
		keeps = "1 keeps what it runs"
	}
	fmt.Fprintf(stdout, "deployment %s deleted (generation %d): of the %d devices given it, %d take on their next deployment%s and %s; the controller acts on it\n",
		name, tomb.Generation, len(given), moving, map[bool]string{true: " (" + strings.Join(to, ", ") + ")"}[moving > 0], keeps)
	return nil
}

func publishRollout(s *fleetSession, r *fleet.Rollout) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return s.conn.Publish(ctx, fleet.Topics{Prefix: s.flags.prefix}.Rollout(r.Name), b, true)
}

func fleetStatus(args []string, stdout, stderr io.Writer) error {
	s, err := openFleet("status", "[NAME]", args, stderr, false, nil, func(pos []string) error {
		if len(pos) > 1 {
			return errors.New("usage: ledge fleet status [NAME]")
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer s.conn.Close()
	if len(s.pos) == 0 {
		return fleetList(s, stdout)
	}
	st := fleet.StatusOf(s.snap, s.pos[0])
	if st == nil {
		if why, ok := s.snap.Invalid[s.pos[0]]; ok {
			return fmt.Errorf("deployment %s is refused: %s", s.pos[0], why)
		}
		return unknownDeployment(s, s.pos[0])
	}
	if s.flags.json {
		return writeJSON(stdout, st)
	}
	fmt.Fprintf(stdout, "deployment %s (generation %d, %s, priority %d): %s, wave %d of %d\n", st.Name, st.Generation, st.State, st.Priority, st.Phase, st.Wave, len(st.Waves))
	fmt.Fprintf(stdout, "target: %s\n", st.Target)
	if st.Reason != "" {
		fmt.Fprintf(stdout, "reason: %s\n", st.Reason)
	}
	fmt.Fprintf(stdout, "targeted %d, applied %d, converged %d, failed %d, pending %d (soak %s, abort after %s)\n",
		st.Targeted, st.Applied, st.Converged, st.Failed, st.Pending, st.Soak, dash(st.AbortAfter))
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WAVE\tSIZE\tTARGET\tAPPLIED\tCONVERGED\tFAILED\tPENDING")
	for _, w := range st.Waves {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%d\t%d\t%d\n", w.Wave, w.Size, w.Target, w.Applied, w.Converged, w.Failed, w.Pending)
	}
	tw.Flush()
	for _, f := range st.Failing {
		fmt.Fprintf(stdout, "failed: %s (wave %d): %s\n", f.Device, f.Wave, f.Error)
	}
	if len(st.RolledBack) > 0 {
		fmt.Fprintf(stdout, "rolled back: %s\n", strings.Join(st.RolledBack, ", "))
	}
	if len(st.PendingDevices) > 0 {
		var parts []string
		for _, p := range st.PendingDevices[:min(len(st.PendingDevices), 10)] {
			parts = append(parts, p.Device+" ("+p.Why+")")
		}
		if more := len(st.PendingDevices) - len(parts); more > 0 {
			parts = append(parts, fmt.Sprintf("and %d more (--json lists them)", more))
		}
		fmt.Fprintf(stdout, "pending: %s\n", strings.Join(parts, ", "))
	}
	return nil
}

// fleetList is `ledge fleet status` without a name: every deployment,
// and those refused.
func fleetList(s *fleetSession, stdout io.Writer) error {
	var all []*fleet.DeploymentStatus
	for _, name := range slices.Sorted(maps.Keys(s.snap.Definitions)) {
		all = append(all, fleet.StatusOf(s.snap, name))
	}
	if s.flags.json {
		return writeJSON(stdout, all)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPRIORITY\tSTATE\tPHASE\tTARGETED\tAPPLIED\tCONVERGED\tFAILED\tPENDING\tTARGET")
	for _, st := range all {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s, wave %d of %d\t%d\t%d\t%d\t%d\t%d\t%s\n", st.Name, st.Priority, st.State, st.Phase, st.Wave, len(st.Waves),
			st.Targeted, st.Applied, st.Converged, st.Failed, st.Pending, st.Target)
	}
	tw.Flush()
	for _, name := range slices.Sorted(maps.Keys(s.snap.Invalid)) {
		fmt.Fprintf(stdout, "refused: %s: %s\n", name, s.snap.Invalid[name])
	}
	fmt.Fprintf(stdout, "%d deployments\n", len(all))
	return nil
}

func fleetController(args []string, stdout, stderr io.Writer) error {
	var id, level string
	var resend time.Duration
	fs := newFlagSet("fleet controller", "[--id ID] [--resend 15s]", stderr)
	var ff fleetFlags
	ff.register(fs)
	fs.StringVar(&id, "id", "", "this controller's id (default: host, pid and a random part)")
	fs.StringVar(&level, "log-level", "info", "debug, info, warn or error")
	fs.DurationVar(&resend, "resend", 15*time.Second, "publish a deployment again to an online device that has not taken it after this long (then twice as long each time)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("usage: ledge fleet controller [flags]: it takes no arguments (got %q)", strings.Join(pos, " "))
	}
	keys, err := ff.keys(true)
	if err != nil {
		return err
	}
	if id == "" {
		id = cliID("controller")
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("--log-level: %q: want debug, info, warn or error", level)
	}
	var h slog.Handler = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv})
	if ff.json { // logs as JSON lines, for a log shipper
		h = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: lv})
	}
	log := slog.New(h).With("component", "fleet", "controller", id)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if resend <= 0 {
		return fmt.Errorf("--resend %s: want a positive duration", resend)
	}
	dctx, cancel := context.WithTimeout(ctx, time.Minute)
	conn, err := ff.dial(dctx, id, true, log)
	cancel()
	if err != nil {
		return err
	}
	defer conn.Close()
	// A controller whose key is not the fleet's would take the lease and
	// give the devices manifests they all refuse, stalling every rollout.
	if snap := conn.View().Snapshot(keys); len(snap.Definitions)+len(snap.Deleted) == 0 {
		var untrusted []string
		for _, name := range slices.Sorted(maps.Keys(snap.Invalid)) {
			if strings.Contains(snap.Invalid[name], "not trusted") {
				untrusted = append(untrusted, name)
			}
		}
		if len(untrusted) > 0 {
			return fmt.Errorf("none of the %d deployments on the broker verifies with this controller's key (%s: %s): start it with the fleet key (--key or $LEDGE_FLEET_KEY), or trust the key they are signed with (--trust)",
				len(snap.Invalid), untrusted[0], snap.Invalid[untrusted[0]])
		}
	}
	log.Info("fleet controller connected", "brokers", strings.Join(redactAllURLs(ff.brokerURLs()), ","))
	c := &fleet.Controller{Conn: conn, ID: id, Verifier: keys, Sealer: keys, Log: log, Resend: resend}
	return c.Run(ctx)
}

func redactAllURLs(urls []string) []string {
	out := make([]string, len(urls))
	for i, u := range urls {
		out[i] = redact.URL(u)
	}
	return out
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
