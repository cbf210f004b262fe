package spool

import "net"

// net2Buffers lets several byte slices be written with one writev-like loop
// instead of being concatenated first.
func net2Buffers(b [][]byte) *net.Buffers {
	nb := net.Buffers(b)
	return &nb
}
