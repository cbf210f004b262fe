// Package relay takes accepted mail out of Sluice: the durable spool lives in
// relay/spool; delivery to recipients' servers is built on top of it.
package relay
