package userdb

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/GehirnInc/crypt"
	"github.com/GehirnInc/crypt/sha256_crypt"
	"github.com/GehirnInc/crypt/sha512_crypt"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// argon2id parameters: the RFC 9106 second recommendation scaled to a
// submission server (19 MiB, 2 passes, as OWASP suggests), tuned so one
// verification costs tens of milliseconds, not hundreds.
const (
	argonTime    = 2
	argonMemory  = 19 * 1024
	argonThreads = 1
	argonKeyLen  = 32
)

var b64 = base64.RawStdEncoding

// HashPassword returns the PHC string of an argon2id hash of password.
func HashPassword(password string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, argonMemory, argonTime, argonThreads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

var errUnknownHash = errors.New("userdb: unknown hash format")

// CheckPassword reports whether password matches the stored hash:
// argon2id (PHC form), bcrypt, and the SHA-crypt hashes hosting panels and
// Dovecot write ($6$ SHA512-CRYPT, $5$ SHA256-CRYPT), with or without a
// Dovecot scheme prefix such as {SHA512-CRYPT}. Comparisons are
// constant-time. Plain-text and MD5 schemes are refused.
//
// At most one verification per CPU runs at a time; the others wait. The
// slow hashes are CPU-bound, so this costs no throughput, and it bounds the
// memory: an argon2id verification needs 19 MiB, so fifty logins at once
// would otherwise hold about a gigabyte, which the Go runtime keeps long
// after the logins are done.
func CheckPassword(stored, password string) (bool, error) {
	hashSlots <- struct{}{}
	defer func() { <-hashSlots }()
	hashChecks.Add(1)
	return checkPassword(stored, password)
}

var (
	hashSlots  = make(chan struct{}, max(2, runtime.GOMAXPROCS(0)))
	hashChecks atomic.Int64 // verifications done, for tests
)

func checkPassword(stored, password string) (bool, error) {
	if strings.HasPrefix(stored, "{") {
		end := strings.IndexByte(stored, '}')
		if end < 0 {
			return false, errUnknownHash
		}
		switch strings.ToUpper(stored[1:end]) {
		case "SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT", "ARGON2ID", "CRYPT":
			stored = stored[end+1:]
		default:
			return false, fmt.Errorf("userdb: hash scheme %s is not accepted (use bcrypt, argon2id or SHA512-CRYPT)", stored[:end+1])
		}
	}
	switch {
	case strings.HasPrefix(stored, "$6$"):
		return checkCrypt(sha512_crypt.New(), stored, password)
	case strings.HasPrefix(stored, "$5$"):
		return checkCrypt(sha256_crypt.New(), stored, password)
	case strings.HasPrefix(stored, "$argon2id$"):
		return checkArgon2id(stored, password)
	case strings.HasPrefix(stored, "$2a$"), strings.HasPrefix(stored, "$2b$"), strings.HasPrefix(stored, "$2y$"):
		err := bcrypt.CompareHashAndPassword([]byte(stored), []byte(password))
		if errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
			return false, nil
		}
		return err == nil, err
	}
	return false, errUnknownHash
}

func checkCrypt(c crypt.Crypter, stored, password string) (bool, error) {
	got, err := c.Generate([]byte(password), []byte(stored))
	if err != nil {
		return false, errUnknownHash
	}
	return subtle.ConstantTimeCompare([]byte(got), []byte(stored)) == 1, nil
}

func checkArgon2id(stored, password string) (bool, error) {
	// $argon2id$v=19$m=19456,t=2,p=1$salt$key
	parts := strings.Split(stored, "$")
	if len(parts) != 6 {
		return false, errUnknownHash
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false, errUnknownHash
	}
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil || m == 0 || t == 0 || p == 0 || m > 1<<21 || t > 64 {
		return false, errUnknownHash
	}
	salt, err := b64.DecodeString(parts[4])
	if err != nil {
		return false, errUnknownHash
	}
	want, err := b64.DecodeString(parts[5])
	if err != nil || len(want) < 16 || len(want) > 128 {
		return false, errUnknownHash
	}
	got := argon2.IDKey([]byte(password), salt, t, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// dummyHash is verified against when a user does not exist, so that an
// unknown user costs the same time as a wrong password. It is made at the
// first unknown login, not at start (commands and tests never need it).
var dummyHash = sync.OnceValue(func() string {
	h, _ := HashPassword("sluice-timing-equaliser")
	return h
})

// CheckUnknown costs what CheckPassword of an argon2id hash costs: every
// backend calls it for a login it does not know, so that an unknown login
// cannot be told from a wrong password by the time the answer takes.
func CheckUnknown(password string) { CheckPassword(dummyHash(), password) }
