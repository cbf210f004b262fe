package main

import (
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"sluice/relay"
	"sluice/relay/resolver"
	"sluice/relay/spool"
)

// newRelay builds the delivery side from [relay] and [dns].
func newRelay(cfg *Config, sp *spool.Spool, log *slog.Logger) (*relay.Relay, error) {
	rc := relay.Config{
		Mode: cfg.Relay.Mode, MXPort: cfg.Relay.MXPort,
		Smarthost: cfg.Relay.Smarthost, SmarthostUsername: cfg.Relay.SmarthostUsername, SmarthostPassword: cfg.Relay.SmarthostPassword,
		SmarthostTLS: cfg.Relay.SmarthostTLS, SmarthostInsecure: cfg.Relay.SmarthostInsecureVerify,
		HELO: cfg.heloName(), Hostname: cfg.Hostname,
		Workers: cfg.Relay.Workers, PerDomain: cfg.Relay.PerDomain,
		MaxAge: cfg.Relay.MaxAge.Duration, WarnAfter: cfg.Relay.WarnAfter.Duration,
		ConnectTimeout: cfg.Relay.ConnectTimeout.Duration, CommandTimeout: cfg.Relay.CommandTimeout.Duration,
		IdleConnTimeout: cfg.Relay.IdleConnTimeout.Duration,
	}
	for _, d := range cfg.Relay.RetrySchedule {
		rc.Retry = append(rc.Retry, d.Duration)
	}
	for _, ip := range cfg.Relay.SourceIPs {
		rc.SourceIPs = append(rc.SourceIPs, net.ParseIP(ip))
	}
	res := resolver.New(cfg.DNS.Resolver)
	var sts *relay.MTASTS
	if cfg.Relay.MTASTS {
		var roots *x509.CertPool
		if cfg.Relay.MTASTSRootCA != "" {
			pem, err := os.ReadFile(cfg.Relay.MTASTSRootCA)
			if err != nil {
				return nil, fmt.Errorf("[relay] mta_sts_root_ca: %w", err)
			}
			roots = x509.NewCertPool()
			if !roots.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("[relay] mta_sts_root_ca %s holds no PEM certificate", cfg.Relay.MTASTSRootCA)
			}
		}
		sts = relay.NewMTASTS(res, roots, cfg.Relay.MTASTSPolicyAddr)
	}
	sup, err := relay.OpenSuppressions(filepath.Join(cfg.DataDir, "suppress.json"), cfg.Relay.SuppressFor.Duration)
	if err != nil {
		return nil, fmt.Errorf("suppressions: %w", err)
	}
	return relay.New(rc, sp, res, sts, sup, relayExplainer, log), nil
}
