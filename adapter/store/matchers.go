package store

import (
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/prometheus/prometheus/model/labels"
)

// Prometheus's own labels.Matcher decides which series match, so anchoring, flags such as
// (?i), and the rule that a matcher matching "" also selects series without the label are
// Prometheus's by construction. ClickHouse only narrows the candidates first, with exact
// string comparisons that never exclude a matching series (see prefilter); its match()
// function, which is unanchored and ignores a leading (?i) on 18.16, is never used.

// matches reports whether the series with these labels is selected. names and values are
// parallel; a label that is absent has the value "", as in Prometheus.
func matches(ms []*labels.Matcher, names, values []string) bool {
	for _, m := range ms {
		v := ""
		for i, n := range names {
			if n == m.Name {
				v = values[i]
				break
			}
		}
		if !m.Matches(v) {
			return false
		}
	}
	return true
}

// prefilter returns conditions on the series table, joined with AND, that every series
// the matchers select satisfies, and their positional arguments. Values reach ClickHouse
// only as arguments, which clickhouse-go quotes (FuzzQuoteRoundTrip holds that quoting to
// a round trip through the real server). Only exact string comparisons are used; a regex
// contributes a condition only where Prometheus's matcher proves a literal set of values
// or a literal prefix, and is otherwise left to matches. exact reports that the
// conditions select exactly the matching series, so that matches need not run.
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
func prefilter(ms []*labels.Matcher, labelIndex string) (where string, args []any, exact bool) {
	var conds []string
	named := false
	exact = true
	for _, m := range ms {
		if m.Name == labels.MetricName && (m.Type == labels.MatchEqual || m.Type == labels.MatchRegexp && len(m.SetMatches()) > 0) {
			named = true
		}
	}
	for _, m := range ms {
		col, colArgs := "metric_name", []any(nil)
		if m.Name != labels.MetricName {
			col, colArgs = "label_values[indexOf(label_names, ?)]", []any{m.Name}
		}
		vcs, whole := valueConditions(m)
		exact = exact && whole
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
		return "1", nil, exact
	}
	return strings.Join(conds, " AND "), args, exact
}

// valueCondition is a condition on a label value: sql follows the value's expression and
// holds one placeholder, for arg.
type valueCondition struct {
	sql string
	arg any
}

// valueConditions returns what m proves about a selected series' value of m.Name, as exact
// string comparisons; nothing for a regex without a literal set or prefix. whole reports
// that the conditions hold for exactly the values m matches.
func valueConditions(m *labels.Matcher) (vcs []valueCondition, whole bool) {
	switch m.Type {
	case labels.MatchEqual:
		return []valueCondition{{" = ?", m.Value}}, true
	case labels.MatchNotEqual:
		return []valueCondition{{" != ?", m.Value}}, true
	case labels.MatchRegexp:
		if set := m.SetMatches(); len(set) > 0 {
			return []valueCondition{{" IN ?", inSet(set)}}, true
		}
		if p := m.Prefix(); p != "" {
			if hi, ok := prefixEnd(p); ok {
				return []valueCondition{{" >= ?", p}, {" < ?", hi}}, false
			}
			return []valueCondition{{" >= ?", p}}, false
		}
	case labels.MatchNotRegexp:
		if set := m.SetMatches(); len(set) > 0 {
			return []valueCondition{{" NOT IN ?", inSet(set)}}, true
		}
	}
	return nil, false
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
