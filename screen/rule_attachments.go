package screen

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"path"
	"strings"
)

// DefaultBlockedExtensions are file types receivers block and malware uses.
var DefaultBlockedExtensions = []string{
	"exe", "scr", "com", "pif", "bat", "cmd", "cpl", "msi", "msp", "msc", "hta", "jar",
	"js", "jse", "vbs", "vbe", "wsf", "wsh", "ps1", "lnk", "reg", "iso", "img", "vhd",
}

// Attachments refuses attachments by extension and by detected content
// (Windows, Linux and macOS programs, scripts), and looks one level into
// zip archives: each member by its name and by its first bytes.
type Attachments struct {
	Blocked map[string]bool // lower-case extensions without dot
}

// NewAttachments returns the rule for a list of extensions.
func NewAttachments(exts []string) *Attachments {
	a := &Attachments{Blocked: map[string]bool{}}
	for _, e := range exts {
		a.Blocked[strings.ToLower(strings.TrimPrefix(e, "."))] = true
	}
	return a
}

func (a *Attachments) Name() string { return "attachments" }

func (a *Attachments) Check(_ context.Context, m *Message) *Verdict {
	parts, err := m.Parts()
	if err != nil {
		return nil // the headers rule reports broken MIME
	}
	for _, p := range parts {
		// A text part without a file name is the message itself (a
		// pasted script is text, not an attachment).
		if p.Filename == "" && strings.HasPrefix(p.ContentType, "text/") {
			continue
		}
		if v := a.checkFile(p.Filename, p.Body, 0); v != nil {
			return v
		}
	}
	return nil
}

func (a *Attachments) checkFile(name string, data []byte, depth int) *Verdict {
	ext := strings.ToLower(strings.TrimPrefix(path.Ext(name), "."))
	shown := clip(name, 80)
	if name != "" && a.Blocked[ext] {
		return reject("attachments", 552, [3]int{5, 7, 0}, fmt.Sprintf(
			"attachment %s has a blocked file type (.%s) that receivers refuse and malware uses; share it as a download link or in a password-protected archive", shown, ext))
	}
	switch kind := sniff(data); kind {
	case "":
	default:
		if name == "" {
			shown = "without a name"
		}
		return reject("attachments", 554, [3]int{5, 7, 1}, fmt.Sprintf(
			"attachment %s is a %s, which receivers refuse; share it as a download link instead", shown, kind))
	}
	if depth == 0 && (ext == "zip" || bytes.HasPrefix(data, []byte("PK\x03\x04"))) {
		zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return nil
		}
		var head [64]byte
		for i, f := range zr.File {
			if i >= 1000 {
				break
			}
			inner := strings.ToLower(strings.TrimPrefix(path.Ext(f.Name), "."))
			if a.Blocked[inner] {
				return reject("attachments", 554, [3]int{5, 7, 1}, fmt.Sprintf(
					"attachment %s contains %s, a blocked file type (.%s); receivers refuse such archives, so share the file as a download link", shown, clip(f.Name, 80), inner))
			}
			// The member's first bytes, whatever its name says; an
			// archive inside is not opened (one level deep).
			if kind := sniff(memberHead(f, head[:])); kind != "" {
				return reject("attachments", 554, [3]int{5, 7, 1}, fmt.Sprintf(
					"attachment %s contains %s, which is a %s; receivers refuse such archives, so share the file as a download link", shown, clip(f.Name, 80), kind))
			}
		}
	}
	return nil
}

// memberHead reads the first len(buf) bytes of a zip member (fewer when it
// is shorter, none when it cannot be read: encrypted, broken).
func memberHead(f *zip.File, buf []byte) []byte {
	if f.FileInfo().IsDir() || f.UncompressedSize64 == 0 {
		return nil
	}
	rc, err := f.Open()
	if err != nil {
		return nil
	}
	defer rc.Close()
	n, _ := io.ReadFull(rc, buf)
	return buf[:n]
}

// sniff recognises programs and scripts by their first bytes.
func sniff(b []byte) string {
	switch {
	case len(b) >= 64 && b[0] == 'M' && b[1] == 'Z':
		return "Windows program"
	case bytes.HasPrefix(b, []byte("\x7fELF")):
		return "Linux program"
	case len(b) >= 8 && machO(b):
		return "macOS program"
	case len(b) >= 8 && bytes.HasPrefix(b, []byte{0xca, 0xfe, 0xba, 0xbe}):
		return "Java program" // class file: a major version (>= 45) follows the magic
	case isScript(b):
		return "script"
	}
	return ""
}

// machO matches the Mach-O magic numbers (32/64-bit, either byte order)
// and universal ("fat") binaries, whose magic 0xcafebabe Java class files
// share: a fat header has a small architecture count where a class file
// has its version (45 or more).
func machO(b []byte) bool {
	switch binary.BigEndian.Uint32(b) {
	case 0xfeedface, 0xfeedfacf, 0xcefaedfe, 0xcffaedfe:
		return true
	case 0xcafebabe, 0xcafebabf:
		return binary.BigEndian.Uint32(b[4:]) < 45
	}
	return false
}

// isScript matches an interpreter line: "#!/bin/sh", "#! /usr/bin/env".
func isScript(b []byte) bool {
	if !bytes.HasPrefix(b, []byte("#!")) {
		return false
	}
	b = bytes.TrimLeft(b[2:], " \t")
	return len(b) > 0 && b[0] == '/'
}
