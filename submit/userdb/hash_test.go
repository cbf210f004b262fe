package userdb

import "testing"

func TestCheckPasswordFormats(t *testing.T) {
	argon, _ := HashPassword("s3cret pass")
	cases := []struct {
		name, hash string
	}{
		{"argon2id", argon},
		{"argon2id with dovecot prefix", "{ARGON2ID}" + argon},
		// SHA-crypt values made with glibc crypt (Python), bcrypt with PHP, independent
		// of the Go implementation under test.
		{"sha512-crypt", "$6$saltsalt$osX/3U830g/zrFjlLO4TCL7anTNnqPEtGZkQlCTVqQ4pIrvUWJgcB5qXW3Wio7X4AzYGVHZaxr6U8FI7Xf77C/"},
		{"sha512-crypt dovecot", "{SHA512-CRYPT}$6$saltsalt$osX/3U830g/zrFjlLO4TCL7anTNnqPEtGZkQlCTVqQ4pIrvUWJgcB5qXW3Wio7X4AzYGVHZaxr6U8FI7Xf77C/"},
		{"sha256-crypt", "{SHA256-CRYPT}$5$saltsalt$PSOaQ1.uAjoqVUkrZPH7nqXa/TZbB4/.vAbfkDlIjN2"},
		{"bcrypt", "$2y$10$HpmspGK44CZwnkGx02y9juhH8YCPOkdoyqOWZflxmj/HX8k5/v59y"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ok, err := CheckPassword(c.hash, "s3cret pass")
			if err != nil || !ok {
				t.Fatalf("right password: %v %v", ok, err)
			}
			ok, err = CheckPassword(c.hash, "wrong")
			if err != nil || ok {
				t.Fatalf("wrong password: %v %v", ok, err)
			}
		})
	}
	if _, err := CheckPassword("{PLAIN}s3cret pass", "s3cret pass"); err == nil {
		t.Fatal("plain-text scheme accepted")
	}
}
