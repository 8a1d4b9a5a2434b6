package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"ledge/agent"
)

func init() {
	register("keys", command{summary: "make ed25519 keys that sign deployment manifests", run: keysCmd})
}

func keysCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "gen" {
		fmt.Fprint(stderr, "Usage: ledge keys gen [--out] [NAME]\n\nWrites NAME.key (private, mode 0600) and NAME.pub, and prints the line for agent.trustedKeys.\n")
		return errUsage
	}
	fset := newFlagSet("keys gen", "[--out] [NAME]", stderr)
	out := fset.String("out", "ledge-deploy", "file name without extension (also given as NAME)")
	force := fset.Bool("force", false, "overwrite existing files")
	pos, err := parseFlags(fset, args[1:])
	if err != nil {
		return err
	}
	outGiven := false
	fset.Visit(func(f *flag.Flag) { outGiven = outGiven || f.Name == "out" })
	switch {
	case len(pos) > 1 || len(pos) == 1 && outGiven:
		fset.Usage()
		return errUsage
	case len(pos) == 1:
		// ledge keys gen fleet.key writes fleet.key and fleet.pub.
		*out = strings.TrimSuffix(strings.TrimSuffix(pos[0], ".key"), ".pub")
	}
	privPath, pubPath := *out+".key", *out+".pub"
	if !*force {
		for _, p := range []string{privPath, pubPath} {
			if _, err := os.Stat(p); err == nil {
				return fmt.Errorf("%s exists: keep it, or pass --force", p)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	priv, pub, id, err := agent.GenerateKey()
	if err != nil {
		return err
	}
	if err := os.WriteFile(privPath, priv, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(pubPath, pub, 0o644); err != nil {
		return err
	}
	line, err := agent.PublicKeyBase64(pub)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "key %s: private %s (keep it secret), public %s\n", id, privPath, pubPath)
	fmt.Fprintf(stdout, "trust it in ledge.yaml:\n\nagent:\n  trustedKeys:\n    - %q\n", line)
	return nil
}
