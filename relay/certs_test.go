package relay_test

// Certificates for the TLS tests: self-signed ones nobody can verify, and
// a test CA whose leaves verify when it is passed as RootCAs.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"
)

// ---------------------------------------------------------------------------
// Certificates

// selfSigned returns a certificate for hosts signed by itself: no client
// can verify it.
func selfSigned(t testing.TB, hosts ...string) tls.Certificate {
	t.Helper()
	cert, _ := issue(t, hosts, nil, nil, false)
	return cert
}

// testCA is a certificate authority that tests pass as RootCAs.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	tc, key := issue(t, nil, nil, nil, true)
	cert, err := x509.ParseCertificate(tc.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// leaf returns a certificate for hosts signed by the CA.
func (ca *testCA) leaf(t testing.TB, hosts ...string) tls.Certificate {
	t.Helper()
	cert, _ := issue(t, hosts, ca.cert, ca.key, false)
	return cert
}

// expiredLeaf returns a certificate for hosts signed by the CA whose
// validity ended a day ago.
func (ca *testCA) expiredLeaf(t testing.TB, hosts ...string) tls.Certificate {
	t.Helper()
	cert, _ := issueFor(t, hosts, ca.cert, ca.key, false, time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	return cert
}

func issue(t testing.TB, hosts []string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, isCA bool) (tls.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	return issueFor(t, hosts, parent, parentKey, isCA, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
}

// issueFor is issue with the validity given.
func issueFor(t testing.TB, hosts []string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, isCA bool, notBefore, notAfter time.Time) (tls.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "sluice test"},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     hosts,
	}
	if len(hosts) > 0 {
		tmpl.Subject.CommonName = hosts[0]
	}
	if isCA {
		tmpl.Subject.CommonName = "Sluice Test CA"
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = nil
	}
	signer, signKey := tmpl, key
	if parent != nil {
		signer, signKey = parent, parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, key
}
