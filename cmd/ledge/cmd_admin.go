package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

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
	fs := newFlagSet("admin", "set-password | token create NAME | token list | token revoke NAME", stderr)
	var cf configFlags
	cf.register(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		fs.Usage()
		return errUsage
	}
	cfg, _, err := cf.load()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return err
	}
	ctx := context.Background()
	db, err := appliance.OpenDB(ctx, filepath.Join(cfg.DataDir, "ledge.db"), cfg.Database.Synchronous)
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
		enc := json.NewEncoder(stdout)
		for _, t := range list {
			enc.Encode(t)
		}
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
