package auth

import (
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/prometheus/exporter-toolkit/web"
	"go.yaml.in/yaml/v2"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/time/rate"
)

// maxFileBytes bounds the web config file, which is read on every request.
const maxFileBytes = 1 << 20

// fileFormat is the web config file: exporter-toolkit's format, which Prometheus and its
// exporters read from --web.config.file, plus a section of pyramid's own. A file written
// for Prometheus or an exporter is valid unchanged.
type fileFormat struct {
	web.Config `yaml:",inline"`
	Pyramid    extension `yaml:"pyramid"`
}

// extension is pyramid's section of the web config.
type extension struct {
	// UserPermissions limits users of basic_auth_users; a user not listed may read and
	// write, as every basic-auth user of Prometheus may do everything.
	UserPermissions map[string][]string `yaml:"user_permissions"`
	// BearerTokens are the tokens Prometheus's authorization block sends, by a name for
	// logs. Like passwords, they are stored hashed.
	BearerTokens map[string]tokenEntry `yaml:"bearer_tokens"`
	// UnauthenticatedPaths are probe and metrics paths anyone may request.
	UnauthenticatedPaths []string `yaml:"unauthenticated_paths"`
}

type tokenEntry struct {
	// SHA256 is the hex SHA-256 of the token. A fast hash is enough for a token, which is
	// random and long, unlike a password; it keeps bcrypt's cost off every request.
	SHA256 string `yaml:"sha256"`
	// Permissions default to read and write, as for users.
	Permissions []string `yaml:"permissions"`
}

// permission is a set of the rights a route may require.
type permission uint8

const (
	permRead permission = 1 << iota
	permWrite
	permAll = permRead | permWrite
)

func (p permission) String() string {
	switch p {
	case permRead:
		return "read"
	case permWrite:
		return "write"
	case 0:
		return "none"
	}
	return "read and write"
}

// identity is a user or token that may hold permissions.
type identity struct {
	kind, name string // kind is "user" or "token"
	perms      permission
}

type token struct {
	digest [32]byte
	identity
}

// settings is one version of the web config file, parsed and checked.
type settings struct {
	raw       []byte
	tls       web.TLSConfig // relative paths resolved against the file's directory
	tlsOn     bool
	http2     bool
	headers   map[string]string
	limiter   *rate.Limiter // nil without rate_limit
	users     map[string]user
	tokens    []token
	open      map[string]bool
	challenge []string // WWW-Authenticate values for a 401
}

type user struct {
	hash string
	identity
}

// authOn reports whether requests need credentials at all: as in exporter-toolkit, a
// file with neither users nor tokens configures only TLS.
func (s *settings) authOn() bool { return len(s.users) > 0 || len(s.tokens) > 0 }

// parseFile parses and checks the file's contents; dir is its directory, against which
// relative certificate paths resolve, as exporter-toolkit resolves them.
func parseFile(raw []byte, dir string) (*settings, error) {
	// exporter-toolkit's defaults.
	f := fileFormat{Config: web.Config{
		TLSConfig:  web.TLSConfig{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13},
		HTTPConfig: web.HTTPConfig{HTTP2: true},
	}}
	if err := yaml.UnmarshalStrict(raw, &f); err != nil {
		return nil, err
	}
	f.TLSConfig.SetDirectory(dir)
	s := &settings{raw: raw, tls: f.TLSConfig, tlsOn: f.TLSConfig.IsEnabled(), http2: f.HTTPConfig.HTTP2,
		headers: f.HTTPConfig.Header, users: make(map[string]user, len(f.Users)), open: map[string]bool{}}
	if s.tlsOn {
		// Reads the certificate, key and client CA files: a missing one stops start-up.
		if _, err := web.ConfigToTLSConfig(&s.tls); err != nil {
			return nil, fmt.Errorf("tls_server_config: %w", err)
		}
	}
	if err := checkHeaders(f.HTTPConfig.Header); err != nil {
		return nil, fmt.Errorf("http_server_config: %w", err)
	}
	if rl := f.RateLimiterConfig; rl.Interval != 0 {
		if rl.Interval < 0 || rl.Burst <= 0 {
			return nil, fmt.Errorf("rate_limit: interval %s and burst %d, want both positive", rl.Interval, rl.Burst)
		}
		s.limiter = rate.NewLimiter(rate.Every(rl.Interval), rl.Burst)
	}
	for name, hash := range f.Users {
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("basic_auth_users: user %q: the password must be a bcrypt hash: %w", name, err)
		}
		s.users[name] = user{hash: string(hash), identity: identity{kind: "user", name: name, perms: permAll}}
	}
	for name, perms := range f.Pyramid.UserPermissions {
		u, ok := s.users[name]
		if !ok {
			return nil, fmt.Errorf("pyramid.user_permissions: user %q is not in basic_auth_users", name)
		}
		p, err := parsePermissions(perms)
		if err != nil {
			return nil, fmt.Errorf("pyramid.user_permissions: user %q: %w", name, err)
		}
		u.perms = p
		s.users[name] = u
	}
	seen := map[[32]byte]string{}
	for _, name := range sortedKeys(f.Pyramid.BearerTokens) {
		e := f.Pyramid.BearerTokens[name]
		digest, err := hex.DecodeString(e.SHA256)
		if err != nil || len(digest) != 32 {
			return nil, fmt.Errorf("pyramid.bearer_tokens: token %q: sha256 must be 64 hex digits (sha256sum of the token)", name)
		}
		p := permAll
		if e.Permissions != nil {
			if p, err = parsePermissions(e.Permissions); err != nil {
				return nil, fmt.Errorf("pyramid.bearer_tokens: token %q: %w", name, err)
			}
		}
		t := token{digest: [32]byte(digest), identity: identity{kind: "token", name: name, perms: p}}
		if other, dup := seen[t.digest]; dup {
			return nil, fmt.Errorf("pyramid.bearer_tokens: tokens %q and %q have the same hash", other, name)
		}
		seen[t.digest] = name
		s.tokens = append(s.tokens, t)
	}
	for _, p := range f.Pyramid.UnauthenticatedPaths {
		if !probePath(p) {
			return nil, fmt.Errorf("pyramid.unauthenticated_paths: %q cannot be opened; only /metrics, /-/healthy and /-/ready can", p)
		}
		s.open[p] = true
	}
	if len(s.users) > 0 {
		s.challenge = append(s.challenge, `Basic realm="pyramid"`)
	}
	if len(s.tokens) > 0 {
		s.challenge = append(s.challenge, `Bearer realm="pyramid"`)
	}
	return s, nil
}

func parsePermissions(names []string) (permission, error) {
	var p permission
	for _, n := range names {
		switch n {
		case "read":
			p |= permRead
		case "write":
			p |= permWrite
		default:
			return 0, fmt.Errorf("unknown permission %q (want read or write)", n)
		}
	}
	return p, nil
}

// allowedHeaders are the response headers http_server_config.headers may set, with the
// values each may take (any when none are listed): exporter-toolkit's list, so that a file
// it accepts is accepted here and one it refuses is refused.
func allowedHeaders(name string) (values []string, ok bool) {
	switch name {
	case "Strict-Transport-Security", "X-XSS-Protection", "Content-Security-Policy":
		return nil, true
	case "X-Content-Type-Options":
		return []string{"nosniff"}, true
	case "X-Frame-Options":
		return []string{"deny", "sameorigin"}, true
	}
	return nil, false
}

func checkHeaders(h map[string]string) error {
	for _, k := range sortedKeys(h) {
		values, ok := allowedHeaders(k)
		if !ok {
			return fmt.Errorf("HTTP header %q can not be configured", k)
		}
		if len(values) > 0 && !slices.Contains(values, h[k]) {
			return fmt.Errorf("header %s: %q, want one of %s", k, h[k], strings.Join(values, ", "))
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// errTLSGone fails TLS handshakes after the file stopped configuring TLS; turning TLS on
// or off takes a restart, as with exporter-toolkit.
var errTLSGone = errors.New("the web config no longer configures TLS")
