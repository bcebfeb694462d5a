// Package auth serves pyramid over TLS and checks credentials, reading both from a web
// config file in the format of Prometheus's --web.config.file (exporter-toolkit), with
// bearer tokens and per-identity read and write permissions added in a section of its own.
//
// The file is read again on every request and TLS handshake, as exporter-toolkit does, so
// that changed users, tokens and certificates apply without a restart. A file that stops
// parsing fails requests with 500 until it is fixed: Prometheus retries those, and nobody
// gets in on a half-written file.
package auth

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/exporter-toolkit/web"
	"golang.org/x/crypto/bcrypt"
)

// Config names the web config file.
type Config struct {
	// File is the path of the web config file.
	File string
}

// Validate checks that a file is named.
func (c Config) Validate() error {
	if c.File == "" {
		return errors.New("no web config file")
	}
	return nil
}

// Reasons for refusing a request, the values of pyramid_auth_failures_total's label.
const (
	reasonMissing   = "missing_credentials"
	reasonWrong     = "wrong_credentials"
	reasonForbidden = "forbidden"
)

// fakeHash is compared against when the user does not exist, so that the answer takes as
// long as for a wrong password and does not tell which users exist (exporter-toolkit does
// the same). It is the bcrypt hash of "fakepassword".
const fakeHash = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"

// Guard checks every request against the web config file and serves TLS from it.
type Guard struct {
	file   string
	dir    string
	logger *slog.Logger

	failures *prometheus.CounterVec
	loaded   prometheus.Gauge

	mu      sync.Mutex
	current *settings
	lastErr string // the last error logged, so that each is logged once
	// tlsOn is whether the listener serves TLS, decided once at start.
	tlsOn bool

	// bcryptMu runs one bcrypt comparison at a time, as exporter-toolkit does: bcrypt is
	// slow by design, and a stream of wrong passwords must not take every CPU.
	bcryptMu sync.Mutex
	verified *verifiedCache
}

// New reads and checks the file; a file that does not parse, or names certificates that
// do not load, is an error, so that pyramid does not start with it.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Guard, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g := &Guard{
		file: cfg.File, dir: filepath.Dir(cfg.File), logger: logger, verified: newVerifiedCache(verifiedCacheSize),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pyramid_auth_failures_total",
			Help: "Requests refused by authentication (401: missing or wrong credentials) or authorization (403: forbidden), by reason.",
		}, []string{"reason"}),
		loaded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pyramid_web_config_last_reload_successful",
			Help: "1 if the web config file parses as it is now; 0 if it does not, and requests get 500 until it is fixed.",
		}),
	}
	for _, r := range []string{reasonMissing, reasonWrong, reasonForbidden} {
		g.failures.WithLabelValues(r)
	}
	s, err := g.settings()
	if err != nil {
		return nil, err
	}
	g.tlsOn = s.tlsOn
	reg.MustRegister(g.failures, g.loaded)
	switch {
	case s.authOn() && !s.tlsOn:
		logger.Warn("web config asks for credentials but configures no TLS: passwords and tokens cross the network readable", "file", cfg.File)
	case !s.authOn() && !s.tlsOn:
		logger.Warn("web config configures neither TLS nor credentials", "file", cfg.File)
	}
	logger.Info("web config loaded", "file", cfg.File, "tls", s.tlsOn, "users", len(s.users), "tokens", len(s.tokens))
	return g, nil
}

// settings returns the file's current settings, parsing it again when it changed.
func (g *Guard) settings() (*settings, error) {
	raw, err := readFile(g.file)
	g.mu.Lock()
	defer g.mu.Unlock()
	if err == nil && g.current != nil && bytes.Equal(raw, g.current.raw) {
		return g.current, nil
	}
	var s *settings
	if err == nil {
		s, err = parseFile(raw, g.dir)
	}
	if err != nil {
		err = fmt.Errorf("web config %s: %w", g.file, err)
		// Logged once per distinct error, not once per request.
		if g.current != nil && err.Error() != g.lastErr {
			g.logger.Error("web config does not parse; requests get 500 until it is fixed", "err", err)
		}
		g.lastErr = err.Error()
		g.loaded.Set(0)
		return nil, err
	}
	if g.current != nil {
		g.logger.Info("web config reloaded", "file", g.file, "users", len(s.users), "tokens", len(s.tokens))
	}
	g.current, g.lastErr = s, ""
	g.loaded.Set(1)
	return s, nil
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > maxFileBytes {
		return nil, fmt.Errorf("larger than %d bytes", maxFileBytes)
	}
	return raw, nil
}

// Listener wraps ln in TLS when the file configured TLS at start, and returns ln as it is
// otherwise. Each handshake takes the file's current TLS settings and certificates.
func (g *Guard) Listener(ln net.Listener) net.Listener {
	if !g.tlsOn {
		return ln
	}
	return tls.NewListener(ln, &tls.Config{GetConfigForClient: g.tlsConfig})
}

// TLS reports whether Listener serves TLS.
func (g *Guard) TLS() bool { return g.tlsOn }

func (g *Guard) tlsConfig(*tls.ClientHelloInfo) (*tls.Config, error) {
	s, err := g.settings()
	if err != nil {
		return nil, err
	}
	if !s.tlsOn {
		return nil, errTLSGone
	}
	c, err := web.ConfigToTLSConfig(&s.tls)
	if err != nil {
		return nil, err
	}
	// http.Server offers HTTP/2 on a TLS listener only to clients that negotiate it here.
	c.NextProtos = []string{"http/1.1"}
	if s.http2 {
		c.NextProtos = []string{"h2", "http/1.1"}
	}
	return c, nil
}

// Handler checks each request's credentials against the route's permission before next
// sees it: 401 with a challenge for missing or wrong credentials, 403 for an identity
// without the permission. It also applies the file's rate limit and response headers.
func (g *Guard) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := g.settings()
		if err != nil {
			http.Error(w, "the web config file does not parse; see pyramid's log", http.StatusInternalServerError)
			return
		}
		if s.limiter != nil && !s.limiter.Allow() {
			http.Error(w, http.StatusText(http.StatusTooManyRequests), http.StatusTooManyRequests)
			return
		}
		for k, v := range s.headers {
			w.Header().Set(k, v)
		}
		if !s.authOn() || s.open[r.URL.Path] {
			next.ServeHTTP(w, r)
			return
		}
		id, reason := g.identify(s, r)
		if id == nil {
			g.failures.WithLabelValues(reason).Inc()
			g.logger.Debug("request refused", "reason", reason, "path", r.URL.Path, "remote", r.RemoteAddr)
			for _, c := range s.challenge {
				w.Header().Add("WWW-Authenticate", c)
			}
			http.Error(w, http.StatusText(http.StatusUnauthorized), http.StatusUnauthorized)
			return
		}
		need := required(r.URL.Path)
		if id.perms&need != need {
			g.failures.WithLabelValues(reasonForbidden).Inc()
			g.logger.Debug("request refused", "reason", reasonForbidden, id.kind, id.name, "path", r.URL.Path, "remote", r.RemoteAddr)
			http.Error(w, fmt.Sprintf("%s %q may not %s (it may %s)", id.kind, id.name, need, id.perms), http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// identify returns who the request's Authorization header names, or why nobody.
func (g *Guard) identify(s *settings, r *http.Request) (*identity, string) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, reasonMissing
	}
	scheme, cred, _ := strings.Cut(h, " ")
	switch {
	case strings.EqualFold(scheme, "Basic"):
		name, pass, ok := r.BasicAuth()
		if !ok {
			return nil, reasonWrong
		}
		return g.checkPassword(s, name, pass)
	case strings.EqualFold(scheme, "Bearer"):
		return checkToken(s, strings.TrimSpace(cred))
	}
	return nil, reasonWrong
}

// checkPassword compares with bcrypt once per user, hash and password, and then answers
// from the cache of verified ones: bcrypt on every remote write would cost a CPU.
func (g *Guard) checkPassword(s *settings, name, pass string) (*identity, string) {
	u, known := s.users[name]
	hash := u.hash
	if !known {
		hash = fakeHash
	}
	key := cacheKey(name, hash, pass)
	if known && g.verified.has(key) {
		return &u.identity, ""
	}
	g.bcryptMu.Lock()
	err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(pass))
	g.bcryptMu.Unlock()
	if !known || err != nil {
		return nil, reasonWrong
	}
	// Only successes are cached, so that a flood of wrong passwords cannot evict them.
	g.verified.add(key)
	return &u.identity, ""
}

// checkToken compares the token's hash with every configured one in constant time.
func checkToken(s *settings, tok string) (*identity, string) {
	if tok == "" {
		return nil, reasonWrong
	}
	digest := sha256.Sum256([]byte(tok))
	var found *identity
	for i := range s.tokens {
		if subtle.ConstantTimeCompare(digest[:], s.tokens[i].digest[:]) == 1 {
			found = &s.tokens[i].identity
		}
	}
	if found == nil {
		return nil, reasonWrong
	}
	return found, ""
}
