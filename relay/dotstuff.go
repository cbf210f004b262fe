package relay

import (
	"bufio"
	"bytes"
	"net/textproto"
)

var (
	lf    = []byte("\n")
	cr    = []byte("\r")
	crlf  = []byte("\r\n")
	lfDot = []byte("\n.")
)

// writeDotted writes msg as the data of a DATA command, its final dot
// included, byte for byte what textproto's DotWriter writes. A message of
// CRLF lines only (every message Sluice accepts) takes the fast path: the
// lines that begin with a dot are found with a search, not byte by byte.
// Anything else (a bare CR or LF) goes through the DotWriter.
func writeDotted(bw *bufio.Writer, msg []byte) error {
	n := bytes.Count(msg, crlf)
	if bytes.Count(msg, lf) != n || bytes.Count(msg, cr) != n {
		dw := textproto.NewWriter(bw).DotWriter()
		if _, err := dw.Write(msg); err != nil {
			return err
		}
		return dw.Close()
	}
	endsLine := bytes.HasSuffix(msg, crlf)
	if len(msg) > 0 && msg[0] == '.' {
		bw.WriteByte('.')
	}
	for {
		i := bytes.Index(msg, lfDot)
		if i < 0 {
			break
		}
		bw.Write(msg[:i+2]) // through the dot, which is then doubled
		bw.WriteByte('.')
		msg = msg[i+2:]
	}
	bw.Write(msg)
	if !endsLine {
		bw.Write(crlf) // the final dot goes on a line of its own
	}
	bw.WriteString(".\r\n")
	return bw.Flush()
}
