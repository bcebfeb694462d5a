package adapter

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
)

// selector is one remote-read query's label matchers, as the store takes them
// (labels.Matcher, whose semantics are Prometheus 3's), and as the client wrote them, for
// messages.
type selector struct {
	matchers []*labels.Matcher
	text     []string
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
//
// A 2.x client's regex re becomes the 3.x matcher (?-s:re): 3.x compiles it as
// ^(?s:(?-s:re))$, which is 2.x's ^(?:re)$, and Prometheus's matcher optimisations (literal
// sets, prefixes) still see through the flag group. The equivalence needs re to be a
// regex on its own, which 3.x requires too; 2.x alone accepts an unbalanced one such as
// "a)|(b", which is refused here.
func newSelector(pms []*prompb.LabelMatcher, dialect regexDialect) (*selector, error) {
	s := &selector{matchers: make([]*labels.Matcher, 0, len(pms)), text: make([]string, 0, len(pms))}
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
		value := pm.Value
		if dialect == regexPrometheus2 && (t == labels.MatchRegexp || t == labels.MatchNotRegexp) {
			if _, err := regexp.Compile(value); err != nil {
				return nil, fmt.Errorf("%w: matcher %s%s%q: %v", ErrInvalidQuery, pm.Name, t, pm.Value, err)
			}
			value = "(?-s:" + value + ")"
		}
		m, err := labels.NewMatcher(t, pm.Name, value)
		if err != nil {
			return nil, fmt.Errorf("%w: matcher %s%s%q: %v", ErrInvalidQuery, pm.Name, t, pm.Value, err)
		}
		s.matchers = append(s.matchers, m)
		s.text = append(s.text, pm.Name+t.String()+fmt.Sprintf("%q", pm.Value))
	}
	return s, nil
}

// narrows reports whether some matcher rejects the empty string. Without one, the selector
// selects every series that lacks the labels it names, which is usually every series:
// PromQL refuses such a selector ("vector selector must contain at least one non-empty
// matcher"), and so does remote read here, with no matchers at all included. (Prometheus's
// own remote-read handler passes such selectors to its TSDB, which returns every series for
// {a=~".*"} and none for an empty list.)
func (s *selector) narrows() bool {
	for _, m := range s.matchers {
		if !m.Matches("") {
			return true
		}
	}
	return false
}

// String renders the matchers as the client wrote them, as a PromQL selector.
func (s *selector) String() string {
	return "{" + strings.Join(s.text, ", ") + "}"
}
