// Package relay takes accepted mail out of Sluice. The durable spool lives
// in relay/spool; this package delivers it: a scheduler ordered by next
// attempt and a bounded pool of workers (relay.go); per message, the
// pending recipients grouped by domain, one transaction per domain,
// outcomes per recipient, retries, expiry and suppression (attempt.go);
// the servers of a domain (MX by preference, the implicit MX, null MX,
// MTA-STS filtering, or the smarthost) and the SMTP transaction
// (deliver.go); connections with opportunistic or verified TLS and AUTH
// (dial.go, starttls.go), reused through a pool that never hands a session
// to a message whose policy it does not satisfy (pool.go); MTA-STS policies
// (mtasts.go); RFC 3464 bounces and delay warnings (dsn.go); and the list
// of hard-bounced recipients (suppress.go).
package relay
