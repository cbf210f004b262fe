package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"sluice/screen"
	"sluice/submit/sqlauth"
)

// Config is the whole configuration file. Every key has a default (see
// defaultConfig) and a comment in sluice.example.toml.
type Config struct {
	Hostname string `toml:"hostname"`
	DataDir  string `toml:"data_dir"`
	Log      struct {
		Format string `toml:"format"` // "text" or "json"
		Level  string `toml:"level"`  // "debug", "info", "warn", "error"
	} `toml:"log"`
	Submission struct {
		Listen              []string `toml:"listen"`
		ListenTLS           []string `toml:"listen_tls"`
		MaxMessageSize      int64    `toml:"max_message_size"`
		MaxRecipients       int      `toml:"max_recipients"`
		MaxConnections      int      `toml:"max_connections"`
		MaxConnectionsPerIP int      `toml:"max_connections_per_ip"`
		MaxCommandErrors    int      `toml:"max_command_errors"`
		IdleTimeout         Duration `toml:"idle_timeout"`
		DataTimeout         Duration `toml:"data_timeout"`
		ShutdownTimeout     Duration `toml:"shutdown_timeout"`
		InFlowDelay         Duration `toml:"in_flow_delay"`
		ProxyProtocol       bool     `toml:"proxy_protocol"`
		ProxyTrusted        []string `toml:"proxy_trusted"`
	} `toml:"submission"`
	TLS struct {
		CertFile string `toml:"cert_file"`
		KeyFile  string `toml:"key_file"`
	} `toml:"tls"`
	Auth struct {
		Backends []string `toml:"backends"`
		SQL      struct {
			Driver        string   `toml:"driver"`
			DSN           string   `toml:"dsn"`
			PasswordQuery string   `toml:"password_query"`
			GrantsQuery   string   `toml:"grants_query"`
			QuotaQuery    string   `toml:"quota_query"`
			CacheTTL      Duration `toml:"cache_ttl"`
			Timeout       Duration `toml:"timeout"`
		} `toml:"sql"`
		Dovecot struct {
			Socket  string   `toml:"socket"`
			Service string   `toml:"service"`
			Grants  string   `toml:"grants"`
			Timeout Duration `toml:"timeout"`
		} `toml:"dovecot"`
		UsersFile           string   `toml:"users_file"`
		CacheTTL            Duration `toml:"cache_ttl"`
		MaxFailuresPerLogin int      `toml:"max_failures_per_login"`
		MaxFailuresPerIP    int      `toml:"max_failures_per_ip"`
		FailureWindow       Duration `toml:"failure_window"`
		Lockout             Duration `toml:"lockout"`
	} `toml:"auth"`
	HTTP struct {
		Listen     string `toml:"listen"`
		Autoconfig bool   `toml:"autoconfig"`
		IMAPHost   string `toml:"imap_host"`
		AdminToken string `toml:"admin_token"`
	} `toml:"http"`
	Webhooks []struct {
		URL    string   `toml:"url"`
		Secret string   `toml:"secret"`
		Events []string `toml:"events"`
	} `toml:"webhooks"`
	DNS struct {
		Resolver string `toml:"resolver"`
	} `toml:"dns"`
	Relay struct {
		Mode                    string     `toml:"mode"`
		MXPort                  int        `toml:"mx_port"`
		Smarthost               string     `toml:"smarthost"`
		SmarthostUsername       string     `toml:"smarthost_username"`
		SmarthostPassword       string     `toml:"smarthost_password"`
		SmarthostTLS            string     `toml:"smarthost_tls"`
		SmarthostInsecureVerify bool       `toml:"smarthost_insecure_skip_verify"`
		HELO                    string     `toml:"helo"`
		SourceIPs               []string   `toml:"source_ips"`
		Workers                 int        `toml:"workers"`
		PerDomain               int        `toml:"per_domain_connections"`
		RetrySchedule           []Duration `toml:"retry_schedule"`
		MaxAge                  Duration   `toml:"max_age"`
		WarnAfter               Duration   `toml:"warn_after"`
		ConnectTimeout          Duration   `toml:"connect_timeout"`
		CommandTimeout          Duration   `toml:"command_timeout"`
		IdleConnTimeout         Duration   `toml:"idle_connection_timeout"`
		SuppressFor             Duration   `toml:"suppress_for"`
		MTASTS                  bool       `toml:"mta_sts"`
		MTASTSRootCA            string     `toml:"mta_sts_root_ca"`
		MTASTSPolicyAddr        string     `toml:"mta_sts_policy_addr"`
	} `toml:"relay"`
	DKIM struct {
		FallbackDomain string `toml:"fallback_domain"`
		Precheck       bool   `toml:"precheck"`
	} `toml:"dkim"`
	Screen struct {
		Enabled           bool                         `toml:"enabled"`
		WebForm           string                       `toml:"webform"`
		WebFormLimit      int                          `toml:"webform_limit"`
		LoopRepeats       int                          `toml:"loop_repeats"`
		LoopWindow        Duration                     `toml:"loop_window"`
		BlockedExtensions []string                     `toml:"blocked_extensions"`
		DomainBlocklists  []string                     `toml:"domain_blocklists"`
		IPBlocklists      []string                     `toml:"ip_blocklists"`
		BlocklistBudget   Duration                     `toml:"blocklist_budget"`
		Overrides         map[string]map[string]string `toml:"overrides"`
		NewRecipientsHour int                          `toml:"new_recipients_per_hour"`
		VolumeMultiple    float64                      `toml:"volume_multiple"`
		MinVolume         int                          `toml:"volume_minimum"`
		AbuseContact      string                       `toml:"abuse_contact"`
		Rspamd            struct {
			URL       string   `toml:"url"`
			Password  string   `toml:"password"`
			Budget    Duration `toml:"budget"`
			Fallback  string   `toml:"fallback"`
			AddHeader string   `toml:"add_header"`
		} `toml:"rspamd"`
	} `toml:"screen"`
	Spool struct {
		GroupCommit bool `toml:"group_commit"`
		Journal     bool `toml:"journal"`
	} `toml:"spool"`
	Quota struct {
		RedisURL        string                       `toml:"redis_url"`
		MessagesPerHour int                          `toml:"messages_per_hour"`
		Window          Duration                     `toml:"window"`
		Hold            Duration                     `toml:"reservation_hold"`
		Timeout         Duration                     `toml:"timeout"`
		OnStoreError    string                       `toml:"on_store_error"`
		Domains         map[string]domainQuotaConfig `toml:"domains"`
	} `toml:"quota"`
}

// domainQuotaConfig is one [quota.domains."example.com"] table.
type domainQuotaConfig struct {
	PerLogin *int `toml:"per_login"`
	Total    int  `toml:"total"`
}

// Duration is a time.Duration written as "15m" in TOML.
type Duration struct{ time.Duration }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration like \"90s\" or \"15m\"", b)
	}
	d.Duration = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

func defaultConfig() *Config {
	c := &Config{}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	c.Hostname = host
	c.DataDir = "./data"
	c.Log.Format = "text"
	c.Log.Level = "info"
	if os.Geteuid() == 0 {
		c.Submission.Listen = []string{":587"}
		c.Submission.ListenTLS = []string{":465"}
	} else {
		c.Submission.Listen = []string{":2587"}
		c.Submission.ListenTLS = []string{":2465"}
	}
	c.Submission.MaxMessageSize = 25 << 20
	c.Submission.MaxRecipients = 100
	c.Submission.MaxConnections = 10000
	c.Submission.MaxConnectionsPerIP = 100
	c.Submission.MaxCommandErrors = 10
	c.Submission.IdleTimeout = Duration{5 * time.Minute}
	c.Submission.DataTimeout = Duration{3 * time.Minute}
	c.Submission.ShutdownTimeout = Duration{30 * time.Second}
	c.Submission.InFlowDelay = Duration{time.Second}
	c.Spool.GroupCommit = true
	c.Spool.Journal = true
	c.DKIM.Precheck = true
	c.Screen.Enabled = true
	c.Screen.WebForm = "reject"
	c.Screen.WebFormLimit = 10
	c.Screen.LoopRepeats = 20
	c.Screen.LoopWindow = Duration{10 * time.Minute}
	c.Screen.BlockedExtensions = append([]string(nil), screen.DefaultBlockedExtensions...)
	c.Screen.BlocklistBudget = Duration{1500 * time.Millisecond}
	c.Screen.NewRecipientsHour = 1000
	c.Screen.Rspamd.Budget = Duration{2 * time.Second}
	c.Screen.Rspamd.Fallback = "accept"
	c.Screen.Rspamd.AddHeader = "mark"
	c.Screen.VolumeMultiple = 10
	c.Screen.MinVolume = 200
	c.Relay.Mode = "mx"
	c.Relay.MXPort = 25
	c.Relay.SmarthostTLS = "starttls"
	c.Relay.Workers = 100
	c.Relay.PerDomain = 20
	c.Relay.RetrySchedule = []Duration{{5 * time.Minute}, {10 * time.Minute}, {20 * time.Minute}, {40 * time.Minute}, {time.Hour}}
	c.Relay.MaxAge = Duration{5 * 24 * time.Hour}
	c.Relay.WarnAfter = Duration{4 * time.Hour}
	c.Relay.ConnectTimeout = Duration{30 * time.Second}
	c.Relay.CommandTimeout = Duration{5 * time.Minute}
	c.Relay.IdleConnTimeout = Duration{30 * time.Second}
	c.Relay.SuppressFor = Duration{30 * 24 * time.Hour}
	c.Relay.MTASTS = true
	c.Quota.MessagesPerHour = 200
	c.Quota.Window = Duration{time.Hour}
	c.Quota.Hold = Duration{10 * time.Minute}
	c.Quota.Timeout = Duration{200 * time.Millisecond}
	c.Quota.OnStoreError = "tempfail"
	c.Auth.Backends = []string{"file"}
	c.Auth.SQL.CacheTTL = Duration{time.Minute}
	c.Auth.SQL.Timeout = Duration{2 * time.Second}
	c.Auth.Dovecot.Service = "smtp"
	c.Auth.Dovecot.Grants = "file"
	c.Auth.Dovecot.Timeout = Duration{5 * time.Second}
	c.Auth.MaxFailuresPerLogin = 10
	c.Auth.MaxFailuresPerIP = 30
	c.Auth.FailureWindow = Duration{15 * time.Minute}
	c.Auth.Lockout = Duration{15 * time.Minute}
	c.Auth.CacheTTL = Duration{5 * time.Minute}
	return c
}

// loadConfig reads path (empty: embedded defaults only), applies SLUICE_*
// environment overrides and checks the result. Errors are one line.
func loadConfig(path string) (*Config, error) {
	c := defaultConfig()
	if path != "" {
		md, err := toml.DecodeFile(path, c)
		if err != nil {
			var pe toml.ParseError
			if errors.As(err, &pe) {
				return nil, fmt.Errorf("config %s: line %d: %s", path, pe.Position.Line, oneLine(pe.Message))
			}
			return nil, fmt.Errorf("config %s: %s", path, oneLine(err.Error()))
		}
		if und := md.Undecoded(); len(und) > 0 {
			return nil, fmt.Errorf("config %s: unknown key %q (see sluice.example.toml for the keys)", path, und[0].String())
		}
	}
	applyEnv(c)
	if err := c.check(); err != nil {
		if path == "" {
			path = "(defaults)"
		}
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// applyEnv lets the deployment-critical keys be set from the environment.
func applyEnv(c *Config) {
	if v, ok := os.LookupEnv("SLUICE_HOSTNAME"); ok {
		c.Hostname = v
	}
	if v, ok := os.LookupEnv("SLUICE_DATA_DIR"); ok {
		c.DataDir = v
	}
	if v, ok := os.LookupEnv("SLUICE_SUBMISSION_LISTEN"); ok {
		c.Submission.Listen = splitList(v)
	}
	if v, ok := os.LookupEnv("SLUICE_SUBMISSION_LISTEN_TLS"); ok {
		c.Submission.ListenTLS = splitList(v)
	}
	if v, ok := os.LookupEnv("SLUICE_ADMIN_TOKEN"); ok {
		c.HTTP.AdminToken = v
	}
	if v, ok := os.LookupEnv("SLUICE_HTTP_LISTEN"); ok {
		c.HTTP.Listen = v
	}
	if v, ok := os.LookupEnv("SLUICE_REDIS_URL"); ok {
		c.Quota.RedisURL = v
	}
}

func splitList(v string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' }) {
		out = append(out, f)
	}
	return out
}

func (c *Config) check() error {
	switch {
	case c.Hostname == "" || strings.ContainsAny(c.Hostname, " \t/"):
		return fmt.Errorf("hostname %q is not a host name", c.Hostname)
	case c.DataDir == "":
		return errors.New("data_dir is empty; set it to a directory Sluice may write, e.g. /var/lib/sluice")
	case len(c.Submission.Listen)+len(c.Submission.ListenTLS) == 0:
		return errors.New("[submission] has no listen or listen_tls address; add e.g. listen = [\":587\"]")
	case c.Submission.MaxMessageSize < 1024:
		return fmt.Errorf("[submission] max_message_size %d is too small (at least 1024 bytes)", c.Submission.MaxMessageSize)
	case c.Submission.MaxRecipients < 1:
		return errors.New("[submission] max_recipients must be at least 1")
	case (c.TLS.CertFile == "") != (c.TLS.KeyFile == ""):
		return errors.New("[tls] cert_file and key_file must be set together (or both left empty for a self-signed certificate)")
	case c.Log.Format != "text" && c.Log.Format != "json":
		return fmt.Errorf("[log] format %q: use \"text\" or \"json\"", c.Log.Format)
	}
	for _, a := range append(append([]string{}, c.Submission.Listen...), c.Submission.ListenTLS...) {
		_, port, err := splitHostPort(a)
		n, perr := strconv.Atoi(port)
		if err != nil || perr != nil || n < 0 || n > 65535 {
			return fmt.Errorf("[submission] listen address %q is not host:port with a port from 0 to 65535", a)
		}
	}
	switch c.Screen.WebForm {
	case "reject", "limit", "allow":
	default:
		return fmt.Errorf("[screen] webform %q: use \"reject\", \"limit\" or \"allow\"", c.Screen.WebForm)
	}
	if a := c.Screen.Rspamd.AddHeader; a != "mark" && a != "hold" {
		return fmt.Errorf("[screen.rspamd] add_header %q: use \"mark\" or \"hold\"", a)
	}
	if f := c.Screen.Rspamd.Fallback; f != "accept" && f != "defer" {
		return fmt.Errorf("[screen.rspamd] fallback %q: use \"accept\" or \"defer\"", f)
	}
	for who, o := range c.Screen.Overrides {
		for rule, action := range o {
			switch rule {
			case "webform", "loop", "headers", "attachments", "links", "compromise", "rspamd":
			default:
				return fmt.Errorf("[screen.overrides.%q] unknown rule %q (webform, loop, headers, attachments, links, compromise, rspamd)", who, rule)
			}
			switch action {
			case "reject", "defer", "hold", "allow":
			default:
				return fmt.Errorf("[screen.overrides.%q] %s = %q: use reject, defer, hold or allow", who, rule, action)
			}
		}
	}
	switch {
	case c.Relay.Mode != "mx" && c.Relay.Mode != "smarthost":
		return fmt.Errorf("[relay] mode %q: use \"mx\" or \"smarthost\"", c.Relay.Mode)
	case c.Relay.Mode == "smarthost" && c.Relay.Smarthost == "":
		return errors.New("[relay] mode = \"smarthost\" needs smarthost = \"host:port\"")
	case c.Relay.SmarthostTLS != "starttls" && c.Relay.SmarthostTLS != "implicit":
		return fmt.Errorf("[relay] smarthost_tls %q: use \"starttls\" or \"implicit\"", c.Relay.SmarthostTLS)
	case c.Relay.MXPort < 1 || c.Relay.MXPort > 65535:
		return fmt.Errorf("[relay] mx_port %d is not a port", c.Relay.MXPort)
	case len(c.Relay.RetrySchedule) == 0:
		return errors.New("[relay] retry_schedule needs at least one duration")
	}
	if c.Relay.Smarthost != "" {
		if _, _, err := splitHostPort(c.Relay.Smarthost); err != nil {
			return fmt.Errorf("[relay] smarthost %q is not host:port", c.Relay.Smarthost)
		}
	}
	for _, w := range c.Webhooks {
		if !strings.HasPrefix(w.URL, "https://") && !strings.HasPrefix(w.URL, "http://") {
			return fmt.Errorf("[[webhooks]] url %q must start with https:// (or http:// on a private network)", w.URL)
		}
		if w.Secret == "" {
			return fmt.Errorf("[[webhooks]] url %q has no secret; set one (e.g. openssl rand -hex 32) so the receiver can verify each event", w.URL)
		}
		for _, e := range w.Events {
			switch e {
			case "message.held", "login.suspended", "quota.reached", "message.bounced", "message.delivered":
			default:
				return fmt.Errorf("[[webhooks]] unknown event %q (message.held, login.suspended, quota.reached, message.bounced, message.delivered)", e)
			}
		}
	}
	if t := c.HTTP.AdminToken; t != "" && len(t) < 24 {
		return errors.New("[http] admin_token is too short; use at least 24 random characters (e.g. openssl rand -hex 24)")
	}
	if len(c.Auth.Backends) == 0 {
		return errors.New("[auth] backends is empty; list at least one of \"file\", \"sql\", \"dovecot\"")
	}
	for _, b := range c.Auth.Backends {
		switch b {
		case "file":
		case "sql":
			if c.Auth.SQL.Driver != "postgres" && c.Auth.SQL.Driver != "mysql" {
				return fmt.Errorf("[auth.sql] driver %q: use \"postgres\" or \"mysql\"", c.Auth.SQL.Driver)
			}
			if c.Auth.SQL.DSN == "" || c.Auth.SQL.PasswordQuery == "" {
				return errors.New("[auth.sql] needs dsn and password_query")
			}
			// Placeholders and columns are checked here, so that a bad
			// query stops a start or a reload with one line.
			if err := sqlauth.Check(sqlauth.Config{Driver: c.Auth.SQL.Driver, DSN: c.Auth.SQL.DSN, PasswordQuery: c.Auth.SQL.PasswordQuery,
				GrantsQuery: c.Auth.SQL.GrantsQuery, QuotaQuery: c.Auth.SQL.QuotaQuery}); err != nil {
				return err
			}
		case "dovecot":
			if c.Auth.Dovecot.Socket == "" {
				return errors.New("[auth.dovecot] needs socket, e.g. \"/run/dovecot/auth-client\"")
			}
			if g := c.Auth.Dovecot.Grants; g != "file" && g != "sql" && g != "none" {
				return fmt.Errorf("[auth.dovecot] grants %q: use \"file\", \"sql\" or \"none\"", g)
			}
		default:
			return fmt.Errorf("[auth] backends: unknown backend %q (file, sql, dovecot)", b)
		}
	}
	if c.Submission.ProxyProtocol && len(c.Submission.ProxyTrusted) == 0 {
		return errors.New("[submission] proxy_protocol needs proxy_trusted, the networks of your load balancers, e.g. [\"10.0.0.0/8\"]")
	}
	for _, n := range c.Submission.ProxyTrusted {
		if _, _, err := net.ParseCIDR(n); err != nil {
			return fmt.Errorf("[submission] proxy_trusted: %q is not a network like \"10.0.0.0/8\"", n)
		}
	}
	for _, ip := range c.Relay.SourceIPs {
		if net.ParseIP(ip) == nil {
			return fmt.Errorf("[relay] source_ips: %q is not an IP address", ip)
		}
	}
	if c.DNS.Resolver != "" {
		if _, _, err := splitHostPort(c.DNS.Resolver); err != nil {
			return fmt.Errorf("[dns] resolver %q is not host:port, e.g. \"127.0.0.1:53\"", c.DNS.Resolver)
		}
	}
	switch {
	case c.Quota.OnStoreError != "tempfail" && c.Quota.OnStoreError != "allow":
		return fmt.Errorf("[quota] on_store_error %q: use \"tempfail\" or \"allow\"", c.Quota.OnStoreError)
	case c.Quota.MessagesPerHour < 0:
		return errors.New("[quota] messages_per_hour must be 0 (unlimited) or more")
	case c.Quota.Window.Duration < time.Second:
		return errors.New("[quota] window must be at least 1s")
	case c.Quota.Timeout.Duration <= 0:
		return errors.New("[quota] timeout must be positive, e.g. \"200ms\"")
	}
	for d, q := range c.Quota.Domains {
		if d != strings.ToLower(d) || !strings.Contains(d, ".") {
			return fmt.Errorf("[quota.domains] %q: write the domain in lower case, e.g. [quota.domains.\"example.com\"]", d)
		}
		if q.Total < 0 || q.PerLogin != nil && *q.PerLogin < 0 {
			return fmt.Errorf("[quota.domains.%q] limits must be 0 (unlimited) or more", d)
		}
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		return err
	}
	return nil
}

// heloName is the name Sluice greets remote servers with.
func (c *Config) heloName() string {
	if c.Relay.HELO != "" {
		return c.Relay.HELO
	}
	return c.Hostname
}

// usersFile is where the file backend keeps the logins.
func (c *Config) usersFile() string {
	if c.Auth.UsersFile != "" {
		return c.Auth.UsersFile
	}
	return filepath.Join(c.DataDir, "users.json")
}
