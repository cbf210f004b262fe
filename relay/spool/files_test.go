package spool

import (
	"os"
	"path/filepath"
	"testing"
)

// TestReplaceFile: the new content replaces the old, with the mode asked
// for, and no temporary file is left behind; a path that cannot be written
// leaves the old content alone.
func TestReplaceFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "users.json")
	for _, content := range []string{"first\n", "second, longer than the first\n", "3\n"} {
		if err := ReplaceFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil || string(got) != content {
			t.Fatalf("after replacing with %q: %q, %v", content, got, err)
		}
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the file", len(entries))
	}
	// The temporary name is taken by a directory: the write fails, the
	// old content stays.
	if err := os.Mkdir(filepath.Join(dir, ".users.json.tmp"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := ReplaceFile(p, []byte("lost\n"), 0o600); err == nil {
		t.Fatal("ReplaceFile succeeded over a blocked temporary name")
	}
	if got, _ := os.ReadFile(p); string(got) != "3\n" {
		t.Errorf("a failed replace changed the file: %q", got)
	}
}
