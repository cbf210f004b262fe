package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"

	"sluice/relay/explain"
)

// cmdExplain reads a reply line (an argument, or standard input: a pasted
// bounce) and says what it means and what to do.
func cmdExplain(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("explain", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	reply := strings.Join(pos, " ")
	if reply == "" || reply == "-" {
		b, err := io.ReadAll(io.LimitReader(bufio.NewReader(stdin), 64<<10))
		if err != nil {
			return err
		}
		reply = string(b)
	}
	if strings.TrimSpace(reply) == "" {
		return usagef("usage: sluice explain \"550-5.7.1 ...\"  (or the reply on standard input)")
	}
	e := explain.Explain(reply)
	if *asJSON {
		return json.NewEncoder(stdout).Encode(e)
	}
	fmt.Fprintln(stdout, e.String())
	return nil
}

// relayExplainer adapts the classifier for DSNs, logs and metrics.
func relayExplainer(reply string) (string, string, string) {
	e := explain.Explain(reply)
	return string(e.Category), e.Meaning, e.Action
}
