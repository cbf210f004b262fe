// Command sluice is the one binary of the Sluice submission gateway. It reads
// the configuration, wires the packages together and is the only place that
// knows them all.
//
//	sluice serve [--config FILE]
//	sluice user|dkim|dns|quota|queue|suppress SUBCOMMAND ... [--config FILE]
//	sluice explain "REPLY LINE"
//	sluice bench --addr HOST:PORT ...
//	sluice version
//
// docs/commands/ has a page per command.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
)

var version = "0.1.0-dev"

const usage = `usage: sluice COMMAND [flags]

commands:
  serve     run the submission gateway
  user      manage logins: add, set, list, show, passwd, disable, enable, delete
  explain   what an SMTP reply (ours or a remote server's) means and what to do
  dns       check a domain's SPF, DKIM, DMARC and PTR; print records to publish
  dkim      DKIM keys: keygen, list, record, activate, retire
  quota     show or reset a login's hourly quota
  queue     the spool: list, show, held, retry, hold, release, delete
  suppress  recipients that hard-bounced: list, delete
  bench     load-test an SMTP submission server (Sluice or another)
  version   print the version

Commands that read the configuration take --config FILE (default: the
embedded defaults and SLUICE_* variables). COMMAND -h lists its flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = cmdServe(args[1:], stderr)
	case "user":
		err = cmdUser(args[1:], stdin, stdout)
	case "explain":
		err = cmdExplain(args[1:], stdin, stdout)
	case "dns":
		err = cmdDNS(args[1:], stdout)
	case "dkim":
		err = cmdDKIM(args[1:], stdout)
	case "quota":
		err = cmdQuota(args[1:], stdout)
	case "suppress":
		err = cmdSuppress(args[1:], stdout)
	case "queue":
		err = cmdQueue(args[1:], stdout)
	case "bench":
		err = cmdBench(args[1:], stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "sluice", version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "sluice: unknown command %q\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		var he helpRequested
		if errors.As(err, &he) {
			fmt.Fprint(stdout, he.text)
			return 0
		}
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "sluice %s: %s\n", args[0], ue.msg)
			return 2
		}
		fmt.Fprintf(stderr, "sluice %s: %s\n", args[0], err)
		var ec interface{ ExitCode() int }
		if errors.As(err, &ec) {
			return ec.ExitCode()
		}
		return 1
	}
	return 0
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// helpRequested carries the flag list that -h asked for.
type helpRequested struct{ text string }

func (h helpRequested) Error() string { return "help requested" }

// parseInterspersed parses flags that may come before, between or after the
// positional arguments ("user add a@b.test --quota 5"). -h returns
// helpRequested with the flags and their defaults.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				var b strings.Builder
				fmt.Fprintf(&b, "flags of sluice %s:\n", fs.Name())
				fs.SetOutput(&b)
				fs.PrintDefaults()
				return nil, helpRequested{b.String()}
			}
			return nil, usagef("%v", err)
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// subcommand is what every "sluice CMD SUB ..." command starts with: a
// known subcommand and its flag set, which has --config.
type subcommand struct {
	name    string
	fs      *flag.FlagSet
	cfgPath *string
}

// newSubcommand checks that args start with one of known (-h shows usage)
// and returns the subcommand; the caller declares its own flags on fs.
func newSubcommand(cmd string, args []string, usage string, known ...string) (*subcommand, error) {
	if len(args) == 0 {
		return nil, usagef("%s", usage)
	}
	switch sub := args[0]; {
	case sub == "-h" || sub == "--help" || sub == "help":
		return nil, helpRequested{usage + "\n"}
	case !slices.Contains(known, sub):
		return nil, usagef("unknown subcommand %q\n%s", sub, usage)
	}
	fs := flag.NewFlagSet(cmd+" "+args[0], flag.ContinueOnError)
	return &subcommand{name: args[0], fs: fs, cfgPath: fs.String("config", "", "configuration file (TOML)")}, nil
}

// parse parses the flags after the subcommand's name and returns the
// positional arguments.
func (s *subcommand) parse(args []string) ([]string, error) {
	return parseInterspersed(s.fs, args[1:])
}

// config loads the configuration --config names (or the defaults).
func (s *subcommand) config() (*Config, error) { return loadConfig(*s.cfgPath) }

// multiFlag collects a flag given several times.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func splitHostPort(a string) (string, string, error) { return net.SplitHostPort(a) }

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("[log] level %q: use debug, info, warn or error", s)
	}
	return l, nil
}

func newLogger(c *Config, w io.Writer) *slog.Logger {
	lvl, _ := parseLevel(c.Log.Level)
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
