// Command sink is the benchmark's receiving mail server: it accepts every
// message for every recipient, reads it to the end and throws it away,
// counting messages and recipients. It offers STARTTLS with a self-signed
// certificate, like a real MX. It stands in for Postfix's smtp-sink.
//
//	go run ./bench/sink -listen 127.0.0.1:0 -addr-file sink.addr -count-file sink.count
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"
)

var messages, recipients atomic.Int64

type session struct{ rcpts int64 }

func (s *session) Reset()                               { s.rcpts = 0 }
func (s *session) Logout() error                        { return nil }
func (s *session) Mail(string, *smtp.MailOptions) error { return nil }
func (s *session) Rcpt(string, *smtp.RcptOptions) error { s.rcpts++; return nil }
func (s *session) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	messages.Add(1)
	recipients.Add(s.rcpts)
	return nil
}

func selfSigned() (*tls.Config, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mx.sink.test"},
		DNSNames:  []string{"mx.sink.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	addrFile := flag.String("addr-file", "", "write the address listened on to this file")
	countFile := flag.String("count-file", "", "keep \"MESSAGES RECIPIENTS\" received so far in this file")
	starttls := flag.Bool("starttls", true, "offer STARTTLS (self-signed certificate)")
	flag.Parse()

	s := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &session{}, nil }))
	s.Domain = "mx.sink.test"
	s.MaxMessageBytes = 64 << 20
	s.MaxRecipients = 1000
	s.ReadTimeout = time.Minute
	s.WriteTimeout = time.Minute
	if *starttls {
		tc, err := selfSigned()
		if err != nil {
			log.Fatalf("sink: %v", err)
		}
		s.TLSConfig = tc
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("sink: %v", err)
	}
	if *addrFile != "" {
		if err := os.WriteFile(*addrFile, []byte(l.Addr().String()+"\n"), 0o644); err != nil {
			log.Fatalf("sink: %v", err)
		}
	}
	fmt.Fprintf(os.Stderr, "sink: accepting everything on %s\n", l.Addr())
	go s.Serve(l)

	writeCount := func() {
		if *countFile != "" {
			tmp := *countFile + ".tmp"
			os.WriteFile(tmp, []byte(fmt.Sprintf("%d %d\n", messages.Load(), recipients.Load())), 0o644)
			os.Rename(tmp, *countFile)
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	tick := time.NewTicker(200 * time.Millisecond)
	for {
		select {
		case <-tick.C:
			writeCount()
		case <-sig:
			s.Close()
			writeCount()
			fmt.Fprintf(os.Stderr, "sink: received %d messages for %d recipients\n", messages.Load(), recipients.Load())
			return
		}
	}
}
