// Command ledge is the edge appliance: `ledge run` is the daemon; the other
// subcommands are tools around it.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
)

// Set by the Makefile with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = "unknown"
)

// command is one subcommand.
type command struct {
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
}

var commands = map[string]command{}

// register adds a subcommand; a duplicate is a programming error.
func register(name string, c command) {
	if _, dup := commands[name]; dup || c.run == nil {
		panic("ledge: command registered twice or nil: " + name)
	}
	commands[name] = c
}

// subcommands returns a command that dispatches on its first argument to
// subs: -h prints the usage (exit 0), nothing prints it as an error (exit
// 2), an unknown name gets a suggestion.
func subcommands(name, usage string, subs map[string]func(args []string, stdout, stderr io.Writer) error) func(args []string, stdout, stderr io.Writer) error {
	return func(args []string, stdout, stderr io.Writer) error {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprint(stdout, usage)
			return flag.ErrHelp
		}
		if len(args) == 0 {
			fmt.Fprint(stderr, usage)
			return errUsage
		}
		run, ok := subs[args[0]]
		if !ok {
			names := make([]string, 0, len(subs))
			for n := range subs {
				names = append(names, n)
			}
			fmt.Fprintf(stderr, "ledge %s: unknown subcommand %q%s\nRun 'ledge %s -h' for its subcommands.\n", name, args[0], didYouMean(args[0], names, ""), name)
			return errUsage
		}
		return run(args[1:], stdout, stderr)
	}
}

// errUsage means the flags were wrong; the usage was already printed.
var errUsage = errors.New("usage")

// exitCode makes a command exit with code, printing err when not nil
// (`ledge status` exits 1 when unhealthy, 3 when ledge is not running).
type exitCode struct {
	code int
	err  error
}

func (e *exitCode) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitCode) Unwrap() error { return e.err }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	stdout, stderr = safeOutput(stdout), safeOutput(stderr)
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		names := make([]string, 0, len(commands))
		for n := range commands {
			names = append(names, n)
		}
		fmt.Fprintf(stderr, "ledge: unknown command %q%s\nRun 'ledge -h' for the commands.\n", args[0], didYouMean(args[0], names, ""))
		return 2
	}
	if err := c.run(args[1:], stdout, stderr); err != nil {
		switch {
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			return 2
		}
		var ec *exitCode
		if errors.As(err, &ec) {
			if ec.err != nil {
				fmt.Fprintf(stderr, "ledge %s: %v\n", args[0], ec.err)
			}
			return ec.code
		}
		fmt.Fprintf(stderr, "ledge %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "ledge: an edge appliance for ML inference.")
	fmt.Fprintln(w, "\nUsage: ledge <command> [flags]\n\nCommands:")
	names := slices.Sorted(maps.Keys(commands))
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun `ledge <command> -h` for its flags. Docs: docs/ in the source tree.")
}

// newFlagSet returns a flag set that prints its usage to stderr and returns
// errors instead of exiting.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("ledge "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: ledge %s %s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseN parses args like parseFlags and requires exactly n positional
// arguments, printing the usage otherwise.
func parseN(fs *flag.FlagSet, args []string, n int) ([]string, error) {
	pos, err := parseFlags(fs, args)
	if err != nil {
		return nil, err
	}
	if len(pos) != n {
		fs.Usage()
		return nil, errUsage
	}
	return pos, nil
}

// parseFlags parses args, allowing flags after positional arguments
// (ledge detect img.jpg --model m.onnx). -h prints the usage and returns
// flag.ErrHelp (exit 0); a bad flag prints one line, with a suggestion
// for a mistyped name, and returns errUsage (exit 2).
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseOnce(fs, args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// parseOnce runs fs.Parse with the flag package's own messages silenced
// and prints ours instead.
func parseOnce(fs *flag.FlagSet, args []string) error {
	out, usage := fs.Output(), fs.Usage
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.SetOutput(out)
	fs.Usage = usage
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		fs.Usage()
		return flag.ErrHelp
	}
	hint := ""
	if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: "); ok {
		var names []string
		fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
		hint = didYouMean(strings.TrimLeft(name, "-"), names, "--")
	}
	fmt.Fprintf(out, "%s: %v%s\nRun '%s -h' for its flags.\n", fs.Name(), err, hint, fs.Name())
	return errUsage
}

// didYouMean returns " (did you mean PREFIXname?)" for the known name
// closest to got, when one is close enough to be a typo, else "".
func didYouMean(got string, known []string, prefix string) string {
	// The words other CLIs use for the same thing (ls for list).
	for _, syn := range synonyms[strings.ToLower(got)] {
		if slices.Contains(known, syn) {
			return fmt.Sprintf(" (did you mean %s%s?)", prefix, syn)
		}
	}
	best, bestD := "", 0
	for _, k := range known {
		d := editDistance(strings.ToLower(got), strings.ToLower(k))
		if best == "" || d < bestD || (d == bestD && k < best) {
			best, bestD = k, d
		}
	}
	if best == "" || bestD > max(1, min(len(got), len(best))/3) {
		// A beginning of one name (--abort for --abort-after), however far.
		if len(got) >= 3 {
			for _, k := range slices.Sorted(slices.Values(known)) {
				if strings.HasPrefix(strings.ToLower(k), strings.ToLower(got)) {
					return fmt.Sprintf(" (did you mean %s%s?)", prefix, k)
				}
			}
		}
		return ""
	}
	return fmt.Sprintf(" (did you mean %s%s?)", prefix, best)
}

// synonyms are other CLIs' words for a subcommand, tried before the
// edit distance.
var synonyms = map[string][]string{
	"ls": {"list", "history", "status"}, "list": {"ls", "history", "status"}, // deployments: deploy history, fleet status
	"rm": {"remove", "delete"}, "remove": {"rm", "delete"}, "delete": {"rm", "remove"}, "del": {"rm", "remove", "delete"},
	"get": {"show"}, "inspect": {"show"}, "info": {"show", "status"},
}

// editDistance is the Damerau-Levenshtein distance (adjacent swaps count
// one) between a and b.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}
