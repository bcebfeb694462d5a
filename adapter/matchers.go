package adapter

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
)

// selector is one remote-read query's label matchers. Prometheus's own labels.Matcher
// decides which series match, so anchoring, flags such as (?i), and the rule that a matcher
// matching "" also selects series without the label are Prometheus's by construction.
// ClickHouse only narrows the candidates first, with exact string comparisons that never
// exclude a matching series (see prefilter); its match() function, which is unanchored and
// ignores a leading (?i) on 18.16, is never used.
type selector struct {
	matchers []*labels.Matcher
	// v2 is parallel to matchers: for the regex matchers of a Prometheus 2.x client, the
	// regex as 2.x compiles it, which decides instead of the matcher (see regexDialect).
	v2 []*regexp.Regexp
}

// regexDialect says how a client's Prometheus compiles a regex matcher. Prometheus 2.x
// anchors it as ^(?:re)$, where . does not match a newline; 3.x as ^(?s:re)$, where it
// does. The request does not say which the client means, but its User-Agent does, and a
// Prometheus reading through pyramid must get what its own TSDB would give.
type regexDialect int

const (
	regexPrometheus3 regexDialect = iota
	regexPrometheus2
)

// regexDialectOf returns the dialect of a client by its User-Agent: Prometheus/2.x gets
// 2.x semantics, every other client (Prometheus 3 included) 3.x semantics.
func regexDialectOf(userAgent string) regexDialect {
	if strings.HasPrefix(userAgent, "Prometheus/2.") {
		return regexPrometheus2
	}
	return regexPrometheus3
}

// newSelector compiles the matchers of a remote-read query. A regex that does not compile
// is the client's error (ErrInvalidQuery) and names the matcher.
func newSelector(pms []*prompb.LabelMatcher, dialect regexDialect) (*selector, error) {
	s := &selector{matchers: make([]*labels.Matcher, 0, len(pms)), v2: make([]*regexp.Regexp, 0, len(pms))}
	for _, pm := range pms {
		if pm == nil {
			return nil, fmt.Errorf("%w: empty matcher", ErrInvalidQuery)
		}
		var t labels.MatchType
		switch pm.Type {
		case prompb.LabelMatcher_EQ:
			t = labels.MatchEqual
		case prompb.LabelMatcher_NEQ:
			t = labels.MatchNotEqual
		case prompb.LabelMatcher_RE:
			t = labels.MatchRegexp
		case prompb.LabelMatcher_NRE:
			t = labels.MatchNotRegexp
		default:
			return nil, fmt.Errorf("%w: matcher on label %q has unknown type %d", ErrInvalidQuery, pm.Name, pm.Type)
		}
		m, err := labels.NewMatcher(t, pm.Name, pm.Value)
		if err != nil {
			return nil, fmt.Errorf("%w: matcher %s%s%q: %v", ErrInvalidQuery, pm.Name, t, pm.Value, err)
		}
		var re *regexp.Regexp
		if dialect == regexPrometheus2 && (t == labels.MatchRegexp || t == labels.MatchNotRegexp) {
			// Both dialects parse the same syntax; only the dot differs. The literal sets
			// and prefixes the prefilter takes from m hold in both.
			if re, err = regexp.Compile("^(?:" + pm.Value + ")$"); err != nil {
				return nil, fmt.Errorf("%w: matcher %s%s%q: %v", ErrInvalidQuery, pm.Name, t, pm.Value, err)
			}
		}
		s.matchers = append(s.matchers, m)
		s.v2 = append(s.v2, re)
	}
	return s, nil
}

// matches reports whether the series with these labels is selected. names and values are
// parallel; a label that is absent has the value "", as in Prometheus.
func (s *selector) matches(names, values []string) bool {
	for j, m := range s.matchers {
		v := ""
		for i, n := range names {
			if n == m.Name {
				v = values[i]
				break
			}
		}
		if !s.matchesValue(j, v) {
			return false
		}
	}
	return true
}

// matchesValue reports whether matcher j accepts the label value v.
func (s *selector) matchesValue(j int, v string) bool {
	if re := s.v2[j]; re != nil {
		return re.MatchString(v) == (s.matchers[j].Type == labels.MatchRegexp)
	}
	return s.matchers[j].Matches(v)
}

// narrows reports whether some matcher rejects the empty string. Without one, the selector
// selects every series that lacks the labels it names, which is usually every series:
// PromQL refuses such a selector ("vector selector must contain at least one non-empty
// matcher"), and so does remote read here, with no matchers at all included. (Prometheus's
// own remote-read handler passes such selectors to its TSDB, which returns every series for
// {a=~".*"} and none for an empty list.)
func (s *selector) narrows() bool {
	for j := range s.matchers {
		if !s.matchesValue(j, "") {
			return true
		}
	}
	return false
}

// String renders the matchers as a PromQL selector, {a="x", b=~"y"}.
func (s *selector) String() string {
	parts := make([]string, len(s.matchers))
	for j, m := range s.matchers {
		parts[j] = m.String()
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// prefilter returns conditions on the series table, joined with AND, that every series
// the matchers select satisfies, and their positional arguments. Values reach ClickHouse
// only as arguments, which clickhouse-go quotes (FuzzQuoteRoundTrip holds that quoting to
// a round trip through the real server). Only exact string comparisons are used; a regex
// contributes a condition only where Prometheus's matcher proves a literal set of values
// or a literal prefix, and is otherwise left to matches.
//
// The expression label_values[indexOf(label_names, name)] is the label's value, or "" when
// the series lacks the label (ClickHouse answers a default for index 0), which is exactly
// Prometheus's view of an absent label. pyramid never stores empty label values.
//
// Without a metric name to narrow by (the series table's sort key), the first matcher on
// another label that cannot match "" is also looked up in the label index, so that
// {job="api"} reads that label's key range rather than deciding on every series.
//
// labelIndex is the label index table to look up, qualified: the stored table, because on a
// cluster the lookup runs on each shard as part of the Distributed query over its series,
// and a series' index rows live on its shard.
func (s *selector) prefilter(labelIndex string) (string, []any) {
	var (
		conds []string
		args  []any
	)
	named := false
	for _, m := range s.matchers {
		if m.Name == labels.MetricName && (m.Type == labels.MatchEqual || m.Type == labels.MatchRegexp && len(m.SetMatches()) > 0) {
			named = true
		}
	}
	for _, m := range s.matchers {
		col, colArgs := "metric_name", []any(nil)
		if m.Name != labels.MetricName {
			col, colArgs = "label_values[indexOf(label_names, ?)]", []any{m.Name}
		}
		vcs := valueConditions(m)
		for _, vc := range vcs {
			conds = append(conds, col+vc.sql)
			args = append(append(args, colArgs...), vc.arg)
		}
		// Equality, a literal set or a prefix that excludes "" means the series has the
		// label with one of these values, which the index answers.
		if !named && len(vcs) > 0 && m.Name != labels.MetricName && !m.Matches("") &&
			(m.Type == labels.MatchEqual || m.Type == labels.MatchRegexp) {
			named = true // One index lookup is enough.
			sub := "SELECT fingerprint FROM " + labelIndex + " WHERE name = ?"
			args = append(args, m.Name)
			for _, vc := range vcs {
				sub += " AND value" + vc.sql
				args = append(args, vc.arg)
			}
			conds = append(conds, "fingerprint IN ("+sub+")")
		}
	}
	if len(conds) == 0 {
		return "1", nil
	}
	return strings.Join(conds, " AND "), args
}

// valueCondition is a condition on a label value: sql follows the value's expression and
// holds one placeholder, for arg.
type valueCondition struct {
	sql string
	arg any
}

// valueConditions returns what m proves about a selected series' value of m.Name, as exact
// string comparisons; nothing for a regex without a literal set or prefix.
func valueConditions(m *labels.Matcher) []valueCondition {
	switch m.Type {
	case labels.MatchEqual:
		return []valueCondition{{" = ?", m.Value}}
	case labels.MatchNotEqual:
		return []valueCondition{{" != ?", m.Value}}
	case labels.MatchRegexp:
		if set := m.SetMatches(); len(set) > 0 {
			return []valueCondition{{" IN ?", inSet(set)}}
		}
		if p := m.Prefix(); p != "" {
			if hi, ok := prefixEnd(p); ok {
				return []valueCondition{{" >= ?", p}, {" < ?", hi}}
			}
			return []valueCondition{{" >= ?", p}}
		}
	case labels.MatchNotRegexp:
		if set := m.SetMatches(); len(set) > 0 {
			return []valueCondition{{" NOT IN ?", inSet(set)}}
		}
	}
	return nil
}

// inSet renders as a parenthesised list, the right-hand side of IN.
func inSet[T any](values []T) clickhouse.GroupSet {
	g := clickhouse.GroupSet{Value: make([]any, len(values))}
	for i, v := range values {
		g.Value[i] = v
	}
	return g
}

// prefixEnd returns the least string greater than every string with prefix p, so that
// p <= s < end selects exactly the strings starting with p under ClickHouse's bytewise
// comparison. ok is false when no such string exists (p is all 0xff bytes).
func prefixEnd(p string) (end string, ok bool) {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1]), true
		}
	}
	return "", false
}
