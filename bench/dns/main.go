// Command dns is the benchmark's DNS server: it answers, authoritatively and
// only on the address it is given, for the receiving domain sink.test
// (MX 10 mx.sink.test, mx.sink.test A 127.0.0.1) and for the records of a
// zone file (SPF, DMARC and DKIM of the sending domain). Any other name is
// NXDOMAIN, so nothing ever leaves the machine.
//
//	go run ./bench/dns -listen 127.0.0.1:0 -addr-file dns.addr -zone zone.txt
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/miekg/dns"
)

var builtin = []string{
	"sink.test. 300 IN MX 10 mx.sink.test.",
	"mx.sink.test. 300 IN A 127.0.0.1",
}

type zone map[string][]dns.RR // lower-case FQDN -> records

func (z zone) add(rr dns.RR) {
	name := strings.ToLower(rr.Header().Name)
	z[name] = append(z[name], rr)
}

func (z zone) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) == 1 {
		q := req.Question[0]
		rrs, ok := z[strings.ToLower(q.Name)]
		if !ok {
			m.Rcode = dns.RcodeNameError
		}
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Qtype || q.Qtype == dns.TypeANY {
				m.Answer = append(m.Answer, dns.Copy(rr))
			}
		}
		// Answers may be large (RSA DKIM keys): UDP truncates, TCP retries.
		if _, isUDP := w.RemoteAddr().(*net.UDPAddr); isUDP {
			size := dns.MinMsgSize
			if opt := req.IsEdns0(); opt != nil {
				size = int(opt.UDPSize())
			}
			m.Truncate(size)
		}
	} else {
		m.Rcode = dns.RcodeFormatError
	}
	w.WriteMsg(m)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "UDP and TCP address")
	addrFile := flag.String("addr-file", "", "write the address listened on to this file")
	zoneFile := flag.String("zone", "", "extra records in zone-file syntax (absolute names)")
	flag.Parse()

	z := zone{}
	for _, l := range builtin {
		rr, err := dns.NewRR(l)
		if err != nil {
			log.Fatalf("dns: %q: %v", l, err)
		}
		z.add(rr)
	}
	if *zoneFile != "" {
		f, err := os.Open(*zoneFile)
		if err != nil {
			log.Fatalf("dns: %v", err)
		}
		zp := dns.NewZoneParser(f, ".", *zoneFile)
		for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
			z.add(rr)
		}
		if err := zp.Err(); err != nil {
			log.Fatalf("dns: %s: %v", *zoneFile, err)
		}
		f.Close()
	}

	pc, err := net.ListenPacket("udp", *listen)
	if err != nil {
		log.Fatalf("dns: %v", err)
	}
	l, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		log.Fatalf("dns: %v", err)
	}
	addr := pc.LocalAddr().String()
	udp := &dns.Server{PacketConn: pc, Handler: z}
	tcp := &dns.Server{Listener: l, Handler: z}
	go udp.ActivateAndServe()
	go tcp.ActivateAndServe()
	if *addrFile != "" {
		if err := os.WriteFile(*addrFile, []byte(addr+"\n"), 0o644); err != nil {
			log.Fatalf("dns: %v", err)
		}
	}
	n := 0
	for _, rrs := range z {
		n += len(rrs)
	}
	fmt.Fprintf(os.Stderr, "dns: %d records on %s (udp and tcp)\n", n, addr)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	udp.Shutdown()
	tcp.Shutdown()
}
