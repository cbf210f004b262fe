package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"

	"sluice/dkim"
	"sluice/relay/spool"
	"sluice/submit"
	"sluice/submit/userdb"
)

func cmdServe(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "configuration file (TOML)")
	if _, err := parseInterspersed(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	if stop, err := startProfiles(log); err != nil {
		return err
	} else {
		defer stop()
	}
	// Signals are caught from the start: a SIGHUP (systemd reload) or
	// SIGTERM that arrives while we are still opening stores waits for the
	// loop below instead of killing the process.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	certs, err := loadCertificate(cfg, log)
	if err != nil {
		return err
	}
	sp, err := spool.Open(filepath.Join(cfg.DataDir, "spool"))
	if err != nil {
		return err
	}
	sp.GroupCommit = cfg.Spool.GroupCommit
	if cfg.Spool.Journal {
		switch err := sp.StartJournal(spool.DefaultJournalLimit); {
		case errors.Is(err, spool.ErrJournalLocked):
			return fmt.Errorf("%w: is another sluice serve running with data_dir %s?", err, cfg.DataDir)
		case err != nil:
			// A file per message still works; what the journal holds is
			// read back at a start where it can be.
			log.Warn("spool journal off: a file per message", "err", err)
		}
		defer func() {
			if err := sp.StopJournal(); err != nil {
				log.Error("spool: journaled messages not moved to the queue; they are recovered at the next start", "err", err)
			}
		}()
	}
	users, err := userdb.Open(cfg.usersFile())
	if err != nil {
		return err
	}
	users.CacheTTL = cfg.Auth.CacheTTL.Duration
	ring, err := dkim.Open(dkimDir(cfg))
	if err != nil {
		return err
	}
	auth, closeAuth, err := authChain(cfg, users)
	defer closeAuth()
	if err != nil {
		return err
	}
	st, err := openStores(cfg, log)
	if err != nil {
		return err
	}
	defer st.Close()
	authSusp := authSuspensions{store: st.susp, users: fileLoginsOf(cfg, users), log: log}
	srv := &submit.Server{
		Hostname: cfg.Hostname,
		TLSConfig: &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: certs.get,
		},
		Auth:         auth,
		Spool:        sp,
		Logger:       log,
		Guard:        authGuard(st.guard, authSusp),
		Quota:        st.quota,
		Suspensions:  authSusp,
		AbuseContact: abuseContact(cfg),
		// "allow" lets mail through unmetered when Redis fails; the lockout
		// store then counts as "not locked" (logged and counted) too.
		AllowOnGuardError: cfg.Quota.OnStoreError == "allow",
		Limits: submit.Limits{
			MaxMessageSize:      cfg.Submission.MaxMessageSize,
			MaxRecipients:       cfg.Submission.MaxRecipients,
			MaxConnections:      cfg.Submission.MaxConnections,
			MaxConnectionsPerIP: cfg.Submission.MaxConnectionsPerIP,
			MaxCommandErrors:    cfg.Submission.MaxCommandErrors,
			IdleTimeout:         cfg.Submission.IdleTimeout.Duration,
			DataTimeout:         cfg.Submission.DataTimeout.Duration,
		},
	}

	if cfg.Submission.ProxyProtocol {
		for _, n := range cfg.Submission.ProxyTrusted {
			_, ipn, _ := net.ParseCIDR(n)
			srv.ProxyTrusted = append(srv.ProxyTrusted, ipn)
		}
	}
	met := newMetrics(sp, st.quota, srv)
	out, err := openOutbox(cfg, log)
	if err != nil {
		return err
	}
	srv.Observer = observer{met, out}
	qe := &quotaEvents{out: out, window: cfg.Quota.Window.Duration}
	st.quota.OnReached = qe.reached
	rt := &runtimeParts{st: st, users: users, suspend: &suspender{users: fileLoginsOf(cfg, users), store: st.susp, out: out, log: log}, ring: ring, certs: certs, metrics: met, log: log}
	rt.apply(cfg)
	srv.Screen, srv.Precheck, srv.Signer = &rt.screen, &rt.precheck, rt

	rl, err := newRelay(cfg, sp, log)
	if err != nil {
		return err
	}
	sp.OnEnqueue = rl.Enqueued
	// In-flow delay: past this many new messages waiting for a delivery
	// worker, new transactions wait (up to in_flow_delay) for delivery to
	// catch up.
	srv.Backlog, srv.InFlowLimit, srv.InFlowDelay = rl.Backlog, 4*rl.Workers(), cfg.Submission.InFlowDelay.Duration
	rl.OnResult = relayResults(met, out)

	// Listen on everything first, so that a taken port is one clear error
	// before anything is served.
	type lst struct {
		l        net.Listener
		implicit bool
	}
	var listeners []lst
	for _, group := range []struct {
		addrs    []string
		implicit bool
	}{{cfg.Submission.Listen, false}, {cfg.Submission.ListenTLS, true}} {
		for _, a := range group.addrs {
			l, err := net.Listen("tcp", a)
			if err != nil {
				for _, x := range listeners {
					x.l.Close()
				}
				return fmt.Errorf("listen %s: %w", a, err)
			}
			listeners = append(listeners, lst{l, group.implicit})
		}
	}
	for _, x := range listeners {
		kind := "submission (STARTTLS)"
		if x.implicit {
			kind = "submissions (implicit TLS)"
		}
		log.Info("listening", "addr", x.l.Addr().String(), "kind", kind)
		fmt.Fprintf(stderr, "sluice: %s on %s\n", kind, x.l.Addr())
	}
	var web *httpServer
	if cfg.HTTP.Listen != "" {
		web = &httpServer{metrics: met, spool: sp, rdb: st.rdb, log: log}
		web.cfg.Store(cfg)
		if cfg.HTTP.AdminToken != "" {
			web.admin = &adminAPI{tokenSum: sha256.Sum256([]byte(cfg.HTTP.AdminToken)), cfg: web.cfg.Load,
				users: users, quota: st.quota, susp: st.susp, spool: sp, relay: rl, log: log}
		}
		if err := web.start(cfg.HTTP.Listen); err != nil {
			for _, x := range listeners {
				x.l.Close()
			}
			return err
		}
	}
	log.Info("started", "version", version, "hostname", cfg.Hostname, "data_dir", cfg.DataDir, "users", users.Path(), "quota_store", quotaStoreName(cfg))

	relayCtx, stopRelay := context.WithCancel(context.Background())
	if out != nil {
		go out.Run(relayCtx)
	}
	relayDone := make(chan struct{})
	go func() {
		defer close(relayDone)
		rl.Run(relayCtx)
	}()
	defer func() {
		stopRelay()
		<-relayDone
	}()

	stopControl, err := serveControl(context.Background(), cfg, st.quota, users, rl, log)
	if err != nil {
		for _, x := range listeners {
			x.l.Close()
		}
		return err
	}
	defer stopControl()

	// Users reload themselves at the next login; DKIM keys are checked for
	// changes (keygen, activate, retire) every second.
	go func() {
		for range time.Tick(time.Second) {
			if err := ring.ReloadIfChanged(); err != nil {
				log.Error("dkim keys not reloaded; still signing with the previous set", "err", err)
			}
		}
	}()

	var wg sync.WaitGroup
	errc := make(chan error, len(listeners))
	for _, x := range listeners {
		wg.Add(1)
		go func(x lst) {
			defer wg.Done()
			if err := srv.Serve(x.l, x.implicit); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
				errc <- err
			}
		}(x)
	}

	if web != nil {
		web.listening.Store(true)
	}

	for stop := false; !stop; {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				if next, err := loadConfig(*cfgPath); err != nil {
					log.Error("reload refused: the new configuration is invalid; still running with the old one", "err", err)
				} else {
					eff, cold := reloadable(cfg, next)
					for _, k := range cold {
						log.Warn("reload: this change needs a restart to take effect; the running value stays in force", "key", k)
					}
					rt.reload(eff)
					cfg = eff
					if web != nil {
						web.cfg.Store(eff)
					}
				}
				continue
			}
			log.Info("shutting down: no new connections; open sessions may finish", "signal", sig.String(), "deadline", cfg.Submission.ShutdownTimeout.Duration)
			stop = true
		case err := <-errc:
			log.Error("listener failed", "err", err)
			srv.Close()
			return err
		}
	}
	if web != nil {
		web.listening.Store(false)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Submission.ShutdownTimeout.Duration)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("sessions cut at the shutdown deadline; their messages were not acknowledged", "err", err)
		srv.Close()
	}
	wg.Wait()
	if web != nil {
		web.shutdown(ctx)
	}
	log.Info("submission stopped; stopping delivery between messages")
	return nil
}

// fileLoginsOf is the user file when it holds logins (backend "file", or
// Dovecot's grants and disabled state), else nil.
func fileLoginsOf(cfg *Config, users *userdb.File) *userdb.File {
	if userFileRole(cfg) == roleNone {
		return nil
	}
	return users
}

func quotaStoreName(c *Config) string {
	if c.Quota.RedisURL == "" {
		return "memory"
	}
	return "redis"
}
