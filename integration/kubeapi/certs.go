package kubeapi

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki is what the control plane and its clients are given: one CA signs the
// apiserver's serving certificate and every client certificate (the
// apiserver's --client-ca-file), and a key pair signs service-account tokens.
type pki struct {
	dir                   string
	caCert, caKey         string // files
	serverCert, serverKey string
	saKey, saPub          string
	caPEM                 []byte
	admin, node           keyPair // client certificates, PEM
}

type keyPair struct{ cert, key []byte }

type issued struct {
	cert *x509.Certificate
	key  crypto.Signer
	der  []byte
}

func newPKI(dir, nodeName string) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := &pki{dir: dir}
	ca, err := issue(nil, &x509.Certificate{
		Subject:               pkix.Name{CommonName: "metabind-test-ca"},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	})
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	server, err := issue(ca, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(10, 96, 0, 1)},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
	})
	if err != nil {
		return nil, fmt.Errorf("apiserver serving certificate: %w", err)
	}
	client := func(cn, org string) (keyPair, error) {
		c, err := issue(ca, &x509.Certificate{
			Subject:     pkix.Name{CommonName: cn, Organization: []string{org}},
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		})
		if err != nil {
			return keyPair{}, fmt.Errorf("client certificate %s: %w", cn, err)
		}
		return keyPair{cert: certPEM(c.der), key: keyPEM(c.key)}, nil
	}
	if p.admin, err = client("metabind-test-admin", "system:masters"); err != nil {
		return nil, err
	}
	if p.node, err = client("system:node:"+nodeName, "system:nodes"); err != nil {
		return nil, err
	}
	// The service-account signing key: RSA, as most clusters' (RS256).
	sa, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	saPub, err := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	if err != nil {
		return nil, err
	}
	p.caPEM = certPEM(ca.der)
	files := []struct {
		path *string
		name string
		data []byte
	}{
		{&p.caCert, "ca.crt", p.caPEM},
		{&p.caKey, "ca.key", keyPEM(ca.key)},
		{&p.serverCert, "apiserver.crt", certPEM(server.der)},
		{&p.serverKey, "apiserver.key", keyPEM(server.key)},
		{&p.saKey, "sa.key", keyPEM(sa)},
		{&p.saPub, "sa.pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub})},
	}
	for _, f := range files {
		*f.path = filepath.Join(dir, f.name)
		if err := os.WriteFile(*f.path, f.data, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// issue makes a P-256 key and a certificate for it from tmpl, signed by
// parent (self-signed when parent is nil).
func issue(parent *issued, tmpl *x509.Certificate) (*issued, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	signerCert, signerKey := tmpl, crypto.Signer(key)
	if parent != nil {
		signerCert, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, key.Public(), signerKey)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &issued{cert: cert, key: key, der: der}, nil
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func keyPEM(key crypto.Signer) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		panic(err) // only for key types MarshalPKCS8PrivateKey does not know
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}
