package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"unicode"

	"golang.org/x/term"

	"ledge/appliance"
	"ledge/web"
)

func init() {
	register("admin", command{summary: "dashboard admin password and API tokens (set-password, token create|list|revoke)", run: adminCmd})
}

// adminCmd works on the database directly, so it works whether ledge runs
// or not (SQLite in WAL mode lets both in).
func adminCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("admin", "set-password | token create NAME | token list [--json] | token revoke NAME", stderr)
	var cf configFlags
	cf.register(fs)
	asJSON := fs.Bool("json", false, "token list: one JSON object per line, for scripts")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		fs.Usage()
		return errUsage
	}
	cfg, err := cf.load()
	if err != nil {
		return err
	}
	dbFile := filepath.Join(cfg.DataDir, "ledge.db")
	if _, err := os.Stat(dbFile); err != nil {
		if pos[0] == "set-password" || (pos[0] == "token" && len(pos) > 1 && pos[1] == "create") {
			fmt.Fprintf(stderr, "ledge admin: data dir %s (from %s) holds no database yet: creating it\n", cfg.DataDir, cfg.from())
		} else {
			return fmt.Errorf("no database in data dir %s (from %s): ledge never ran there; pass the --config or --data-dir it runs with", cfg.DataDir, cfg.from())
		}
	} else if pos[0] != "token" || len(pos) < 2 || pos[1] != "list" {
		fmt.Fprintf(stderr, "ledge admin: data dir %s (from %s)\n", cfg.DataDir, cfg.from())
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return err
	}
	ctx := context.Background()
	db, err := appliance.OpenDB(ctx, dbFile, cfg.Database.Synchronous)
	if err != nil {
		return err
	}
	defer db.Close()

	switch {
	case pos[0] == "set-password" && len(pos) == 1:
		pw, err := readPassword(stderr)
		if err != nil {
			return err
		}
		if err := web.SetAdminPassword(ctx, db, pw); err != nil {
			return err
		}
		os.Remove(appliance.PasswordFile(cfg.DataDir)) // the first start's password is no longer it
		fmt.Fprintln(stdout, "admin password set; browser sessions were logged out")
	case pos[0] == "token" && len(pos) == 3 && pos[1] == "create":
		tok, err := web.CreateToken(ctx, db, pos[2])
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "API token %q (shown only now; send it as Authorization: Bearer <token>):\n", pos[2])
		fmt.Fprintln(stdout, tok)
	case pos[0] == "token" && len(pos) == 2 && pos[1] == "list":
		list, err := web.ListTokens(ctx, db)
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(stdout)
			for _, t := range list {
				enc.Encode(t)
			}
			return nil
		}
		if len(list) == 0 {
			fmt.Fprintln(stdout, "no API tokens (ledge admin token create NAME)")
			return nil
		}
		data, _ := json.Marshal(list)
		var rows []map[string]any
		json.Unmarshal(data, &rows)
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		cols := tokenColumns(rows)
		var head []string
		for _, c := range cols {
			head = append(head, columnTitle(c))
		}
		fmt.Fprintln(tw, strings.Join(head, "\t"))
		for _, r := range rows {
			var cells []string
			for _, c := range cols {
				cells = append(cells, fmt.Sprint(orNil(r[c])))
			}
			fmt.Fprintln(tw, strings.Join(cells, "\t"))
		}
		tw.Flush()
	case pos[0] == "token" && len(pos) == 3 && pos[1] == "revoke":
		if err := web.RevokeToken(ctx, db, pos[2]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "token %q revoked\n", pos[2])
	default:
		fs.Usage()
		return errUsage
	}
	return nil
}

// readPassword asks twice on a terminal (no echo), or reads one line from
// a pipe.
func readPassword(stderr io.Writer) (string, error) {
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		if err != nil && line == "" {
			return "", fmt.Errorf("read password from stdin: %w", err)
		}
		return strings.TrimRight(line, "\r\n"), nil
	}
	fmt.Fprint(stderr, "New admin password: ")
	a, err := term.ReadPassword(fd)
	fmt.Fprintln(stderr)
	if err != nil {
		return "", err
	}
	fmt.Fprint(stderr, "Again: ")
	b, err := term.ReadPassword(fd)
	fmt.Fprintln(stderr)
	if err != nil {
		return "", err
	}
	if string(a) != string(b) {
		return "", fmt.Errorf("the two passwords differ")
	}
	return string(a), nil
}

// tokenColumns are the fields of the token list in a stable order: name
// first, then the others as the API names them.
func tokenColumns(rows []map[string]any) []string {
	seen := map[string]bool{}
	cols := []string{"name"}
	seen["name"] = true
	for _, r := range rows {
		for _, k := range slices.Sorted(maps.Keys(r)) {
			if !seen[k] {
				seen[k] = true
				cols = append(cols, k)
			}
		}
	}
	return cols
}

func orNil(v any) any {
	if v == nil {
		return "-"
	}
	return v
}

// columnTitle turns a JSON field name into a table heading: lastUsedAt ->
// LAST USED AT.
func columnTitle(field string) string {
	var b strings.Builder
	for i, r := range field {
		if i > 0 && unicode.IsUpper(r) {
			b.WriteByte(' ')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}
