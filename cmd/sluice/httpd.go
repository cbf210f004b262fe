package main

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"html"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"sluice/relay/spool"
)

// httpServer serves /metrics, /healthz, /readyz and, when enabled, the
// mail-client autoconfiguration documents.
type httpServer struct {
	cfg       atomic.Pointer[Config]
	metrics   *metrics
	spool     *spool.Spool
	rdb       redis.UniversalClient
	listening atomic.Bool // all SMTP listeners are up
	log       *slog.Logger
	srv       *http.Server
	admin     *adminAPI // nil: no admin API
}

func (h *httpServer) start(addr string) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(h.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", h.ready)
	mux.HandleFunc("/.well-known/autoconfig/mail/config-v1.1.xml", h.thunderbird)
	mux.HandleFunc("/mail/config-v1.1.xml", h.thunderbird)
	mux.HandleFunc("/autodiscover/autodiscover.xml", h.autodiscover)
	mux.HandleFunc("/Autodiscover/Autodiscover.xml", h.autodiscover)
	mux.HandleFunc("/apple.mobileconfig", h.mobileconfig)
	if h.admin != nil {
		h.admin.register(mux)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("[http] listen %s: %w", addr, err)
	}
	h.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}
	go func() {
		if err := h.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			h.log.Error("http listener failed", "err", err)
		}
	}()
	h.log.Info("listening", "addr", l.Addr().String(), "kind", "http (metrics, health, autoconfig)")
	return nil
}

func (h *httpServer) shutdown(ctx context.Context) {
	if h.srv != nil {
		h.srv.Shutdown(ctx)
	}
}

func (h *httpServer) ready(w http.ResponseWriter, r *http.Request) {
	var problems []string
	if !h.listening.Load() {
		problems = append(problems, "SMTP listeners not up")
	}
	if err := h.spool.Writable(); err != nil {
		problems = append(problems, "spool not writable")
		h.log.Error("readyz: spool not writable", "err", err)
	}
	if h.rdb != nil {
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		if err := h.rdb.Ping(ctx).Err(); err != nil {
			problems = append(problems, "redis unreachable")
		}
	}
	if len(problems) > 0 {
		http.Error(w, "not ready: "+strings.Join(problems, "; "), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}

// autoconfigFor returns the address asked about and its domain, or false
// when autoconfig is off.
func (h *httpServer) autoconfigFor(w http.ResponseWriter, email string) (*Config, string, string, bool) {
	cfg := h.cfg.Load()
	if !cfg.HTTP.Autoconfig {
		http.NotFound(w, nil)
		return nil, "", "", false
	}
	domain := cfg.Hostname
	if i := strings.LastIndexByte(email, '@'); i > 0 {
		domain = strings.ToLower(email[i+1:])
	}
	return cfg, email, domain, true
}

func xmlText(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

func (h *httpServer) thunderbird(w http.ResponseWriter, r *http.Request) {
	cfg, _, domain, ok := h.autoconfigFor(w, r.URL.Query().Get("emailaddress"))
	if !ok {
		return
	}
	host := xmlText(cfg.Hostname)
	w.Header().Set("Content-Type", "application/xml; charset=utf-8")
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<clientConfig version="1.1">
  <emailProvider id="%s">
    <domain>%s</domain>
    <displayName>%s</displayName>
    <displayShortName>%s</displayShortName>
%s    <outgoingServer type="smtp">
      <hostname>%s</hostname>
      <port>465</port>
      <socketType>SSL</socketType>
      <authentication>password-cleartext</authentication>
      <username>%%EMAILADDRESS%%</username>
    </outgoingServer>
    <outgoingServer type="smtp">
      <hostname>%s</hostname>
      <port>587</port>
      <socketType>STARTTLS</socketType>
      <authentication>password-cleartext</authentication>
      <username>%%EMAILADDRESS%%</username>
    </outgoingServer>
  </emailProvider>
</clientConfig>
`, xmlText(domain), xmlText(domain), xmlText(domain), xmlText(domain), h.incomingXML(cfg), host, host)
}

func (h *httpServer) incomingXML(cfg *Config) string {
	if cfg.HTTP.IMAPHost == "" {
		return ""
	}
	return fmt.Sprintf(`    <incomingServer type="imap">
      <hostname>%s</hostname>
      <port>993</port>
      <socketType>SSL</socketType>
      <authentication>password-cleartext</authentication>
      <username>%%EMAILADDRESS%%</username>
    </incomingServer>
`, xmlText(cfg.HTTP.IMAPHost))
}

// autodiscover answers Outlook's POX request (the EMailAddress in the
// posted XML) with the SMTP settings.
func (h *httpServer) autodiscover(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Email string `xml:"Request>EMailAddress"`
	}
	if r.Method == http.MethodPost {
		xml.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req)
	}
	cfg, email, _, ok := h.autoconfigFor(w, req.Email)
	if !ok {
		return
	}
	imap := ""
	if cfg.HTTP.IMAPHost != "" {
		imap = fmt.Sprintf(`      <Protocol>
        <Type>IMAP</Type>
        <Server>%s</Server>
        <Port>993</Port>
        <SSL>on</SSL>
        <SPA>off</SPA>
        <LoginName>%s</LoginName>
      </Protocol>
`, xmlText(cfg.HTTP.IMAPHost), xmlText(email))
	}
	w.Header().Set("Content-Type", "application/xml; charset=utf-8")
	fmt.Fprintf(w, `<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">
  <Response xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a">
    <Account>
      <AccountType>email</AccountType>
      <Action>settings</Action>
%s      <Protocol>
        <Type>SMTP</Type>
        <Server>%s</Server>
        <Port>465</Port>
        <SSL>on</SSL>
        <SPA>off</SPA>
        <AuthRequired>on</AuthRequired>
        <LoginName>%s</LoginName>
      </Protocol>
    </Account>
  </Response>
</Autodiscover>
`, imap, xmlText(cfg.Hostname), xmlText(email))
}

// mobileconfig is an Apple configuration profile with a Mail payload.
func (h *httpServer) mobileconfig(w http.ResponseWriter, r *http.Request) {
	cfg, email, domain, ok := h.autoconfigFor(w, r.URL.Query().Get("email"))
	if !ok {
		return
	}
	if email == "" || !strings.Contains(email, "@") {
		http.Error(w, "add ?email=you@example.com to the address", http.StatusBadRequest)
		return
	}
	// Apple's Mail payload must name an incoming server, and Sluice serves
	// no IMAP: without imap_host there is no profile to give.
	incoming := cfg.HTTP.IMAPHost
	if incoming == "" {
		http.Error(w, "no Apple profile: the operator has not set [http] imap_host, the IMAP server that goes with this submission server", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/x-apple-aspen-config")
	w.Header().Set("Content-Disposition", `attachment; filename="`+html.EscapeString(domain)+`.mobileconfig"`)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>PayloadContent</key>
  <array>
    <dict>
      <key>EmailAccountType</key><string>EmailTypeIMAP</string>
      <key>EmailAddress</key><string>%[1]s</string>
      <key>IncomingMailServerAuthentication</key><string>EmailAuthPassword</string>
      <key>IncomingMailServerHostName</key><string>%[2]s</string>
      <key>IncomingMailServerPortNumber</key><integer>993</integer>
      <key>IncomingMailServerUseSSL</key><true/>
      <key>IncomingMailServerUsername</key><string>%[1]s</string>
      <key>OutgoingMailServerAuthentication</key><string>EmailAuthPassword</string>
      <key>OutgoingMailServerHostName</key><string>%[3]s</string>
      <key>OutgoingMailServerPortNumber</key><integer>465</integer>
      <key>OutgoingMailServerUseSSL</key><true/>
      <key>OutgoingMailServerUsername</key><string>%[1]s</string>
      <key>OutgoingPasswordSameAsIncomingPassword</key><true/>
      <key>PayloadDisplayName</key><string>Mail %[1]s</string>
      <key>PayloadIdentifier</key><string>%[4]s.sluice.mail</string>
      <key>PayloadType</key><string>com.apple.mail.managed</string>
      <key>PayloadUUID</key><string>%[5]s</string>
      <key>PayloadVersion</key><integer>1</integer>
    </dict>
  </array>
  <key>PayloadDisplayName</key><string>Mail for %[1]s</string>
  <key>PayloadIdentifier</key><string>%[4]s.sluice</string>
  <key>PayloadType</key><string>Configuration</string>
  <key>PayloadUUID</key><string>%[6]s</string>
  <key>PayloadVersion</key><integer>1</integer>
</dict>
</plist>
`, xmlText(email), xmlText(incoming), xmlText(cfg.Hostname), xmlText(reverseDomain(domain)), uuidFor("payload:"+email), uuidFor("profile:"+email))
}

func reverseDomain(d string) string {
	parts := strings.Split(d, ".")
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, ".")
}
