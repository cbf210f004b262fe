package screen

import (
	"archive/zip"
	"bytes"
	"context"
	"fmt"
	"path"
	"strings"
)

// DefaultBlockedExtensions are file types receivers block and malware uses.
var DefaultBlockedExtensions = []string{
	"exe", "scr", "com", "pif", "bat", "cmd", "cpl", "msi", "msp", "msc", "hta", "jar",
	"js", "jse", "vbs", "vbe", "wsf", "wsh", "ps1", "lnk", "reg", "iso", "img", "vhd",
}

// Attachments refuses attachments by extension and by detected content
// (Windows programs, scripts), and looks one level into zip archives.
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
		for i, f := range zr.File {
			if i >= 1000 {
				break
			}
			inner := strings.ToLower(strings.TrimPrefix(path.Ext(f.Name), "."))
			if a.Blocked[inner] {
				return reject("attachments", 554, [3]int{5, 7, 1}, fmt.Sprintf(
					"attachment %s contains %s, a blocked file type (.%s); receivers refuse such archives, so share the file as a download link", shown, clip(f.Name, 80), inner))
			}
		}
	}
	return nil
}

// sniff recognises executables and scripts by their first bytes.
func sniff(b []byte) string {
	switch {
	case len(b) >= 64 && b[0] == 'M' && b[1] == 'Z':
		return "Windows program"
	case bytes.HasPrefix(b, []byte("\x7fELF")):
		return "Linux program"
	case bytes.HasPrefix(b, []byte("#!/")):
		return "script"
	}
	return ""
}
