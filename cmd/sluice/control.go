package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"sluice/relay"
	"sluice/screen"
	"sluice/submit/userdb"
)

// The control socket lets the sluice subcommands reach the running server's
// in-memory state (quotas without Redis). It is a unix socket in the data
// dir, mode 0600: whoever may read the data dir may use it.
func controlPath(cfg *Config) string { return filepath.Join(cfg.DataDir, "control.sock") }

type controlRequest struct {
	Cmd    string `json:"cmd"` // "quota-show", "quota-reset"
	Login  string `json:"login"`
	Domain string `json:"domain,omitempty"`
}

type controlResponse struct {
	Error string       `json:"error,omitempty"`
	Quota *quotaReport `json:"quota,omitempty"`
}

func serveControl(ctx context.Context, cfg *Config, q *screen.Quota, users *userdb.File, rl *relay.Relay, log *slog.Logger) (func(), error) {
	path := controlPath(cfg)
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	os.Chmod(path, 0o600)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				var req controlRequest
				if err := json.NewDecoder(bufio.NewReader(c)).Decode(&req); err != nil {
					return
				}
				resp := controlResponse{}
				switch req.Cmd {
				case "quota-show":
					var override *int
					if u, err := users.Get(req.Login); err == nil {
						override = u.Quota
					}
					r, err := quotaShow(ctx, q, cfg, req.Login, override)
					if err != nil {
						resp.Error = err.Error()
					}
					resp.Quota = r
				case "quota-reset":
					if err := quotaReset(ctx, q, req.Login); err != nil {
						resp.Error = err.Error()
					} else {
						log.Info("quota reset", "login", req.Login, "by", "control socket")
					}
				case "queue-kick":
					rl.Kick()
				case "suppress-delete":
					if sup := rl.Suppressions(); sup == nil || sup.Delete(req.Domain, req.Login) == 0 {
						resp.Error = req.Login + " is not suppressed"
					}
				default:
					resp.Error = "unknown command"
				}
				json.NewEncoder(c).Encode(resp)
			}()
		}
	}()
	return func() { l.Close(); os.Remove(path) }, nil
}

func callControl(cfg *Config, req controlRequest) (*controlResponse, error) {
	c, err := net.DialTimeout("unix", controlPath(cfg), 2*time.Second)
	if err != nil {
		return nil, errors.New("no running sluice serve with this data_dir (quotas without Redis live in the server's memory); start it or set [quota] redis_url")
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return nil, err
	}
	var resp controlResponse
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if resp.Error != "" {
		return nil, errors.New(resp.Error)
	}
	return &resp, nil
}
