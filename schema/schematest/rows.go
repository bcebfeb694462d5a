package schematest

import (
	"context"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Rows runs query and renders each row as one string, floats by their bits, so that the
// answers of two servers can be compared exactly (NaN payloads included) and a difference
// printed readably.
func Rows(t testing.TB, conn driver.Conn, query string, args ...any) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	types := rows.ColumnTypes()
	var out []string
	for rows.Next() {
		dest := make([]any, len(types))
		for i, ct := range types {
			dest[i] = reflect.New(ct.ScanType()).Interface()
		}
		if err := rows.Scan(dest...); err != nil {
			t.Fatalf("%s: scan row %d: %v", query, len(out), err)
		}
		fields := make([]string, len(dest))
		for i, d := range dest {
			fields[i] = render(reflect.ValueOf(d).Elem().Interface())
		}
		out = append(out, strings.Join(fields, " | "))
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: after %d rows: %v", query, len(out), err)
	}
	return out
}

func render(v any) string {
	switch f := v.(type) {
	case float64:
		return fmt.Sprintf("%v(%#016x)", f, math.Float64bits(f))
	case []float64:
		s := make([]string, len(f))
		for i, x := range f {
			s[i] = render(x)
		}
		return "[" + strings.Join(s, " ") + "]"
	}
	return fmt.Sprintf("%#v", v)
}

// DiffRows describes the first difference between two answers, or returns "".
func DiffRows(a, b []string) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("row %d differs:\n  %s\n  %s", i, a[i], b[i])
		}
	}
	if len(a) != len(b) {
		return fmt.Sprintf("%d rows against %d", len(a), len(b))
	}
	return ""
}
