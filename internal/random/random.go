// Package random makes the random strings jitgate hands out: secrets
// (tokens, CSRF values, login state, webhook secrets) and identifiers. They
// are made here once, so every secret has the same strength and encoding.
//
// crypto/rand.Read never fails (since Go 1.24 a broken random source crashes
// the program rather than returning an error), so nothing here returns one.
package random

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"strings"
)

// Secret is 256 random bits, base64url without padding (43 characters; also
// a valid PKCE verifier). Nobody can guess it, so a fast hash of it suffices
// at rest.
func Secret() string {
	return base64.RawURLEncoding.EncodeToString(bytes(32))
}

// ID is prefix followed by n random bytes in lower-case base32 (no
// padding): identifiers that are easy to read and type, not secrets.
func ID(prefix string, n int) string {
	return prefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(bytes(n)))
}

// Hex is n random bytes in hexadecimal.
func Hex(n int) string {
	return hex.EncodeToString(bytes(n))
}

func bytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b) // never fails, see the package comment
	return b
}
