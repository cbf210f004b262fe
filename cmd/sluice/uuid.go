package main

import (
	"crypto/sha256"
	"fmt"
)

// uuidFor is a stable UUID (version 5 style, SHA-256 based) for a name, so
// a re-downloaded profile replaces the installed one instead of doubling it.
func uuidFor(name string) string {
	h := sha256.Sum256([]byte("sluice:" + name))
	h[6] = (h[6] & 0x0f) | 0x50
	h[8] = (h[8] & 0x3f) | 0x80
	return fmt.Sprintf("%X-%X-%X-%X-%X", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}
