// Command dns is the benchmark's DNS server: relay/dnstest's server, on the
// address it is given, answering authoritatively for the receiving domain
// sink.test (MX 10 mx.sink.test, mx.sink.test A 127.0.0.1) and for the
// records of a zone file (SPF, DMARC and DKIM of the sending domain). Any
// other name is NXDOMAIN, so nothing ever leaves the machine.
//
//	go run ./bench/dns -listen 127.0.0.1:0 -addr-file dns.addr -zone zone.txt
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"sluice/relay/dnstest"
)

var builtin = []string{
	"sink.test. 300 IN MX 10 mx.sink.test.",
	"mx.sink.test. 300 IN A 127.0.0.1",
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "UDP and TCP address")
	addrFile := flag.String("addr-file", "", "write the address listened on to this file")
	zoneFile := flag.String("zone", "", "extra records in zone-file syntax, one a line, absolute names")
	flag.Parse()

	s, err := dnstest.Listen(*listen)
	if err != nil {
		log.Fatalf("dns: %v", err)
	}
	n := 0
	add := func(where, line string) {
		if err := s.AddLine(line); err != nil {
			log.Fatalf("dns: %s: %v", where, err)
		}
		n++
	}
	for _, l := range builtin {
		add("built-in record", l)
	}
	if *zoneFile != "" {
		f, err := os.Open(*zoneFile)
		if err != nil {
			log.Fatalf("dns: %v", err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<20)
		for i := 1; sc.Scan(); i++ {
			if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, ";") {
				add(fmt.Sprintf("%s:%d", *zoneFile, i), l)
			}
		}
		if err := sc.Err(); err != nil {
			log.Fatalf("dns: %s: %v", *zoneFile, err)
		}
		f.Close()
	}
	if *addrFile != "" {
		if err := os.WriteFile(*addrFile, []byte(s.Addr+"\n"), 0o644); err != nil {
			log.Fatalf("dns: %v", err)
		}
	}
	fmt.Fprintf(os.Stderr, "dns: %d records on %s (udp and tcp)\n", n, s.Addr)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	s.Close()
}
