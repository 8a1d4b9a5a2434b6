package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"ledge/agent"
	"ledge/agent/manifest"
	"ledge/hub"
	"ledge/hub/azure"
)

// The hub commands talk to the running daemon over its socket:
// ledge identity, ledge method, ledge c2d, ledge twin.

func init() {
	register("identity", command{summary: "hub identities: add|list|show|remove|token (devices, modules, MQTT users)", run: identityCmd})
	register("method", command{summary: "invoke a direct method: method invoke DEVICE[/MODULE] NAME JSON", run: methodCmd})
	register("c2d", command{summary: "send a cloud-to-device message: c2d send DEVICE BODY", run: c2dCmd})
	register("hub", command{summary: "the MQTT hub's state: clients, rates, queues, upstream, drops", run: hubCmd})
	register("twin", command{summary: "device and module twins: twin get NAME | twin patch NAME JSON | twin set-modules DEVICE FILE", run: twinCmd})
}

func identityCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("identity", "add NAME [--kind device|module|user] [--password P] [--x509-thumbprint HEX] [--x509-ca] [--parent EDGE] | list | show NAME | remove NAME | token NAME [--ttl 1h]", stderr)
	var cf configFlags
	cf.register(fs)
	kind := fs.String("kind", "", "device (default), module (NAME is DEVICE/MODULE) or user (plain MQTT username/password)")
	password := fs.String("password", "", "user: the password (generated when empty)")
	thumb := fs.String("x509-thumbprint", "", "device: authenticate with the client certificate of this SHA-256 (or SHA-1) thumbprint")
	x509CA := fs.Bool("x509-ca", false, "device: authenticate with any client certificate from a trusted CA whose CN is the device id")
	ttl := fs.Duration("ttl", time.Hour, "token: how long the SAS token is valid")
	parent := fs.String("parent", "", "device: the edge device (a child ledge) that connects to this hub on its behalf")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		fs.Usage()
		return errUsage
	}
	d, err := connectDaemon(&cf)
	if err != nil {
		return err
	}
	ctx, cancel := withTimeout(30 * time.Second)
	defer cancel()
	switch {
	case pos[0] == "add" && len(pos) == 2:
		var out map[string]any
		body := map[string]any{"name": pos[1], "kind": *kind, "password": *password, "x509Thumbprint": *thumb, "x509CA": *x509CA, "parent": *parent}
		if err := d.do(ctx, "POST", "/hub/identities", body, &out); err != nil {
			return err
		}
		fmt.Fprintln(stderr, "identity created; its secrets are shown now and by `ledge identity show`:")
		printIdentity(stdout, out)
	case pos[0] == "list" && len(pos) == 1:
		var out struct{ Identities []map[string]any }
		if err := d.do(ctx, "GET", "/hub/identities", nil, &out); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tKIND\tAUTH\tENABLED\tCREATED")
		for _, id := range out.Identities {
			fmt.Fprintf(tw, "%v\t%v\t%s\t%v\t%v\n", id["name"], id["kind"], authOf(id), id["enabled"], id["created"])
		}
		tw.Flush()
	case pos[0] == "show" && len(pos) == 2:
		var out map[string]any
		if err := d.do(ctx, "GET", "/hub/identities/"+escapeName(pos[1]), nil, &out); err != nil {
			return err
		}
		printIdentity(stdout, out)
	case pos[0] == "token" && len(pos) == 2:
		if *ttl <= 0 {
			return fmt.Errorf("--ttl %s: want a positive duration", *ttl)
		}
		var out map[string]any
		if err := d.do(ctx, "GET", "/hub/identities/"+escapeName(pos[1]), nil, &out); err != nil {
			return err
		}
		return printToken(stdout, stderr, out, *ttl, filepath.Join(filepath.Dir(d.socket), "hub", "ca.pem"))
	case pos[0] == "remove" && len(pos) == 2:
		if err := d.do(ctx, "DELETE", "/hub/identities/"+escapeName(pos[1]), nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "identity %s removed\n", pos[1])
	default:
		fs.Usage()
		return errUsage
	}
	return nil
}

func escapeName(n string) string {
	parts := strings.Split(n, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

func authOf(id map[string]any) string {
	switch {
	case id["kind"] == "user":
		return "password"
	case id["x509Thumbprint"] != nil:
		return "x509 thumbprint"
	case id["x509CA"] == true:
		return "x509 CA"
	}
	return "sas keys"
}

// printIdentity prints the connection string first (what a device needs),
// then the other secrets.
func printIdentity(w io.Writer, id map[string]any) {
	if cs, _ := id["connectionString"].(string); cs != "" {
		fmt.Fprintln(w, cs)
	}
	for _, k := range []string{"primaryKey", "secondaryKey", "password", "x509Thumbprint"} {
		if v, ok := id[k].(string); ok && v != "" {
			fmt.Fprintf(w, "%s: %s\n", k, v)
		}
	}
	if id["kind"] == "user" {
		fmt.Fprintf(w, "username: %v\n", id["name"])
	}
}

// printToken prints a SAS token for a device or module identity on stdout
// (TOKEN=$(ledge identity token NAME)) and, on stderr, the client id and
// username to use it with, e.g. with mosquitto_pub and the hub's CA file.
func printToken(stdout, stderr io.Writer, id map[string]any, ttl time.Duration, caFile string) error {
	cs, _ := id["connectionString"].(string)
	key, _ := id["primaryKey"].(string)
	if cs == "" || key == "" {
		return fmt.Errorf("identity %v has no keys (%s): SAS tokens are for device and module identities with symmetric keys", id["name"], authOf(id))
	}
	f := map[string]string{}
	for _, kv := range strings.Split(cs, ";") {
		k, v, _ := strings.Cut(kv, "=")
		f[k] = v
	}
	expiry := time.Now().Add(ttl)
	tok, err := azure.BuildToken(azure.Resource(f["HostName"], f["DeviceId"], f["ModuleId"]), key, expiry)
	if err != nil {
		return err
	}
	clientID, user := f["DeviceId"], f["HostName"]+"/"+f["DeviceId"]+"/"
	topic := "devices/" + f["DeviceId"] + "/messages/events/"
	if m := f["ModuleId"]; m != "" {
		clientID, user = clientID+"/"+m, user+m+"/"
		topic = "devices/" + f["DeviceId"] + "/modules/" + m + "/messages/events/"
	}
	user += "?api-version=2021-04-12"
	fmt.Fprintln(stdout, tok)
	host, port := f["GatewayHostName"], "8883"
	if h, p, err := net.SplitHostPort(host); err == nil {
		host, port = h, p
	}
	fmt.Fprintf(stderr, "SAS token for %s, valid until %s\nclient id: %s\nusername:  %s\n", id["name"], expiry.Format(time.RFC3339), clientID, user)
	fmt.Fprintf(stderr, "e.g.: mosquitto_pub -h %s -p %s --cafile '%s' -V mqttv311 -i '%s' -u '%s' -P \"$TOKEN\" -q 1 -t '%s' -m hello\n",
		host, port, caFile, clientID, user, topic)
	return nil
}

func methodCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("method", "invoke DEVICE[/MODULE] NAME [JSON] [--timeout 30s]", stderr)
	var cf configFlags
	cf.register(fs)
	timeout := fs.Duration("timeout", 30*time.Second, "how long the device has to answer (5s to 300s in IoT Hub; any up to 300s here)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 3 || len(pos) > 4 || pos[0] != "invoke" {
		fs.Usage()
		return errUsage
	}
	payload := json.RawMessage("null")
	if len(pos) == 4 {
		if !json.Valid([]byte(pos[3])) {
			return fmt.Errorf("payload %q is not JSON", pos[3])
		}
		payload = json.RawMessage(pos[3])
	}
	d, err := connectDaemon(&cf)
	if err != nil {
		return err
	}
	ctx, cancel := withTimeout(*timeout + 10*time.Second)
	defer cancel()
	var out struct {
		Status  int             `json:"status"`
		Payload json.RawMessage `json:"payload"`
	}
	err = d.do(ctx, "POST", "/hub/methods", map[string]any{"target": pos[1], "method": pos[2], "payload": payload,
		"timeoutSeconds": timeout.Seconds()}, &out)
	switch statusOf(err) {
	case 0:
	case 404:
		return fmt.Errorf("404 not connected: %v", err)
	case 504:
		return fmt.Errorf("504 timeout: %v", err)
	default:
		return err
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "status %d\n", out.Status)
	if len(out.Payload) > 0 {
		fmt.Fprintln(stdout, string(out.Payload))
	}
	if out.Status >= 400 {
		return fmt.Errorf("the method answered status %d", out.Status)
	}
	return nil
}

// propFlags collects --prop k=v.
type propFlags map[string]string

func (p propFlags) String() string { return "" }
func (p propFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return errors.New("want key=value")
	}
	p[k] = v
	return nil
}

var _ flag.Value = propFlags{}

func c2dCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("c2d", "send DEVICE BODY [--prop key=value ...]", stderr)
	var cf configFlags
	cf.register(fs)
	props := propFlags{}
	fs.Var(props, "prop", "a message property key=value (messageId, correlationId, contentType... are system properties); repeatable")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 3 || pos[0] != "send" {
		fs.Usage()
		return errUsage
	}
	body := json.RawMessage(pos[2])
	if !json.Valid(body) {
		body, _ = json.Marshal(pos[2]) // plain text
	}
	d, err := connectDaemon(&cf)
	if err != nil {
		return err
	}
	ctx, cancel := withTimeout(60 * time.Second)
	defer cancel()
	err = d.do(ctx, "POST", "/hub/c2d", map[string]any{"device": pos[1], "body": body, "properties": map[string]string(props)}, nil)
	if statusOf(err) == 404 {
		return fmt.Errorf("404 not connected: %v", err)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "delivered to %s\n", pos[1])
	return nil
}

func twinCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("twin", "get NAME | patch NAME JSON | set-modules DEVICE FILE [--key KEY]\n"+
		"  (NAME: DEVICE or DEVICE/MODULE; a patch goes to desired properties, null deletes a key;\n"+
		"  set-modules writes an Azure manifest's modulesContent into a child device's twins, as IoT Hub does)", stderr)
	var cf configFlags
	cf.register(fs)
	keyFile := fs.String("key", "", "set-modules: sign the deployment with this private key (for a child with agent.trustedKeys)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 3 && pos[0] == "set-modules" {
		return setModules(&cf, pos[1], pos[2], *keyFile, stdout)
	}
	d, err := connectDaemon(&cf)
	if err != nil {
		return err
	}
	ctx, cancel := withTimeout(30 * time.Second)
	defer cancel()
	var out json.RawMessage
	switch {
	case len(pos) == 2 && pos[0] == "get":
		err = d.do(ctx, "GET", "/hub/twins/"+escapeName(pos[1]), nil, &out)
	case len(pos) == 3 && pos[0] == "patch":
		if !json.Valid([]byte(pos[2])) {
			return fmt.Errorf("patch %q is not JSON", pos[2])
		}
		err = d.do(ctx, "PATCH", "/hub/twins/"+escapeName(pos[1]), []byte(pos[2]), &out)
	default:
		fs.Usage()
		return errUsage
	}
	if err != nil {
		return err
	}
	var pretty any
	json.Unmarshal(out, &pretty)
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(pretty)
}

func hubCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("hub", "[--json]", stderr)
	var cf configFlags
	cf.register(fs)
	asJSON := fs.Bool("json", false, "print the hub's whole state as JSON, for scripts")
	if _, err := parseN(fs, args, 0); err != nil {
		return err
	}
	d, err := connectDaemon(&cf)
	if err != nil {
		return err
	}
	ctx, cancel := withTimeout(10 * time.Second)
	defer cancel()
	var raw json.RawMessage
	if err := d.do(ctx, "GET", "/hub", nil, &raw); err != nil {
		return err
	}
	if *asJSON {
		var out any
		json.Unmarshal(raw, &out)
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	var st hub.Stats
	if err := json.Unmarshal(raw, &st); err != nil {
		return err
	}
	printHub(stdout, &st)
	return nil
}

// listenText is a bound address as a user reaches it: "127.0.0.1:1883",
// ":1883 (every interface)" for a wildcard address, "off"; port alone from
// a ledge that does not say its addresses.
func listenText(addr string, port int) string {
	if addr == "" {
		if port == 0 {
			return "off"
		}
		return fmt.Sprintf(":%d", port)
	}
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		return ":" + p + " (every interface)"
	}
	return addr
}

// printHub prints the hub's state as a person reads it.
func printHub(w io.Writer, st *hub.Stats) {
	fmt.Fprintf(w, "hub %s: mqtt %s, mqtts %s\n", st.Hostname, listenText(st.Ports.MQTTAddr, st.Ports.MQTT), listenText(st.Ports.MQTTSAddr, st.Ports.MQTTS))
	fmt.Fprintf(w, "messages  in %d (%.1f/s), out %d (%.1f/s), routed %d, delivered %d (%.1f/s), c2d %d, methods %d, auth failures %d\n",
		st.MessagesReceived, st.Rates.MQTTIn, st.MessagesSent, st.Rates.MQTTOut, st.Routed, st.Delivered, st.Rates.Delivered, st.C2D, st.Methods, st.AuthFailures)
	up := st.Upstream
	if up.Mode == "" {
		fmt.Fprintln(w, "upstream  none (hub.upstream in ledge.yaml)")
	} else {
		line := fmt.Sprintf("upstream  %s %s: %s since %s", up.Mode, up.Broker, up.State, up.Since.Local().Format(time.DateTime))
		if up.LastError != "" {
			line += " - " + up.LastError
		}
		fmt.Fprintln(w, line)
		if len(up.Relays) > 0 {
			// The parent as a full parent: a connection per identity.
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "  RELAY\tSTATE\tLAST ERROR")
			for _, r := range up.Relays {
				fmt.Fprintf(tw, "  %s\t%s\t%s\n", r.Identity, r.State, orDash(oneLine(r.LastError, 100)))
			}
			tw.Flush()
		}
	}
	if len(st.Drops) > 0 {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(st.Drops)) {
			parts = append(parts, fmt.Sprintf("%s %d", k, st.Drops[k]))
		}
		fmt.Fprintf(w, "dropped   %s\n", strings.Join(parts, ", "))
	}

	fmt.Fprintf(w, "\nclients   %d\n", st.ClientsConnected)
	if len(st.Clients) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  CLIENT\tIDENTITY\tKIND\tAUTH\tLISTENER\tREMOTE")
		for _, c := range st.Clients {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", c.ID, orDash(c.Identity), orDash(c.Kind), orDash(c.Auth), c.Listener, c.Remote)
		}
		tw.Flush()
	}
	fmt.Fprintf(w, "\nqueues    %s of %s\n", bytesText(st.QueueBytes), bytesText(st.QueueQuota))
	if len(st.Queues) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  ENDPOINT\tQUEUED\tIN FLIGHT\tBYTES\tOLDEST\tDELIVERED\tFAILURES\tLAST ERROR")
		for _, q := range st.Queues {
			fmt.Fprintf(tw, "  %s\t%d\t%d\t%s\t%s\t%d\t%d\t%s\n", q.Endpoint, q.Depth, q.Inflight, bytesText(q.Bytes),
				q.OldestAge.Round(time.Second), q.Delivered, q.Failures, oneLine(q.LastError, 60))
		}
		tw.Flush()
	}
}

// setModules writes the modulesContent of an Azure manifest into the
// twins of a child device on this hub (its parent), as IoT Hub applies a
// deployment: each entry's desired properties replace those of twin
// DEVICE/<id>. Module twins first, $edgeAgent last: the child deploys
// what the twins say once they settle. With a key, the $ledge twin gets
// the signature of the deployment the twins make (agent.TwinManifest).
func setModules(cf *configFlags, device, file, keyFile string, stdout io.Writer) error {
	data, err := readLimited(file, manifest.MaxSize, "manifest")
	if err != nil {
		return err
	}
	twins, err := agent.TwinsOf(data)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	if twins[agent.TwinEdgeAgent] == nil {
		return fmt.Errorf("%s: no $edgeAgent desired properties: nothing to deploy", file)
	}
	if keyFile != "" {
		keyPEM, err := readLimited(keyFile, maxSignature, "private key")
		if err != nil {
			return err
		}
		priv, err := agent.ParsePrivateKey(keyPEM)
		if err != nil {
			return fmt.Errorf("%s: %w", keyFile, err)
		}
		composed, _, _, err := agent.TwinManifest(twins)
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		ledge := map[string]any{}
		if raw := twins[manifest.LedgeTwin]; raw != nil {
			if err := json.Unmarshal(raw, &ledge); err != nil {
				return fmt.Errorf("%s: $ledge: %w", file, err)
			}
		}
		ledge["signature"] = agent.Sign(priv, composed)
		twins[manifest.LedgeTwin], _ = json.Marshal(ledge)
	}
	ids := make([]string, 0, len(twins))
	for id := range twins {
		ids = append(ids, id)
	}
	rank := func(id string) int {
		switch id {
		case agent.TwinEdgeAgent:
			return 3
		case manifest.LedgeTwin:
			return 2
		case agent.TwinEdgeHub:
			return 1
		}
		return 0
	}
	slices.SortFunc(ids, func(a, b string) int {
		if rank(a) != rank(b) {
			return rank(a) - rank(b)
		}
		return strings.Compare(a, b)
	})
	d, err := connectDaemon(cf)
	if err != nil {
		return err
	}
	for _, id := range ids {
		name := device + "/" + id
		var want map[string]any
		if err := json.Unmarshal(twins[id], &want); err != nil {
			return fmt.Errorf("%s: %s: %w", file, id, err)
		}
		ctx, cancel := withTimeout(30 * time.Second)
		var cur struct {
			Desired map[string]any `json:"desired"`
		}
		err := d.do(ctx, "GET", "/hub/twins/"+escapeName(name), nil, &cur)
		if err != nil && !strings.Contains(err.Error(), "404") && !strings.Contains(err.Error(), "does not exist") {
			cancel()
			return fmt.Errorf("twin %s: %w", name, err)
		}
		patch := map[string]any{}
		for k := range cur.Desired {
			patch[k] = nil
		}
		for k, v := range want {
			if k != "$version" && k != "$metadata" {
				patch[k] = v
			}
		}
		body, _ := json.Marshal(patch)
		err = d.do(ctx, "PATCH", "/hub/twins/"+escapeName(name), body, nil)
		cancel()
		if err != nil {
			return fmt.Errorf("twin %s: %w", name, err)
		}
		fmt.Fprintf(stdout, "set %s\n", name)
	}
	return nil
}
