package sqlauth

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"

	"sluice/submit/userdb"
)

// query is one operator-written query and how many times the login is
// passed to it.
type query struct {
	text string
	args int
}

// newQuery checks the placeholders of an operator's query: PostgreSQL
// queries use $1 only (as often as they like), MySQL queries one or more
// ?, each of which is given the login. A query without a placeholder would
// give every login the same answer.
func newQuery(driver, key, text string) (query, error) {
	text = strings.TrimSpace(text)
	if text == "" {
		return query{}, nil
	}
	n, maxN := placeholders(driver, text)
	switch {
	case driver == "postgres" && maxN > 1:
		return query{}, fmt.Errorf("[auth.sql] %s uses $%d; the login is the only parameter, $1", key, maxN)
	case driver == "postgres" && n == 0:
		return query{}, fmt.Errorf("[auth.sql] %s has no $1 for the login, so every login would get the same answer", key)
	case n == 0:
		return query{}, fmt.Errorf("[auth.sql] %s has no ? for the login, so every login would get the same answer", key)
	}
	if driver == "postgres" {
		n = 1
	}
	return query{text: text, args: n}, nil
}

// placeholders counts the parameter markers of query outside quotes and
// comments: ? for MySQL, $N for PostgreSQL (with the largest N).
func placeholders(driver, q string) (count, maxN int) {
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c == '\'' || c == '"' || c == '`':
			// Quoted: skip to the closing quote; a doubled quote or, for
			// MySQL, a backslash escapes it.
			for i++; i < len(q); i++ {
				if driver == "mysql" && q[i] == '\\' {
					i++
					continue
				}
				if q[i] == c {
					if i+1 < len(q) && q[i+1] == c {
						i++
						continue
					}
					break
				}
			}
		case c == '-' && i+1 < len(q) && q[i+1] == '-', driver == "mysql" && c == '#':
			for i < len(q) && q[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(q) && q[i+1] == '*':
			end := strings.Index(q[i+2:], "*/")
			if end < 0 {
				return count, maxN
			}
			i += end + 3
		case driver == "mysql" && c == '?':
			count++
		case driver == "postgres" && c == '$' && i+1 < len(q) && q[i+1] >= '0' && q[i+1] <= '9':
			j := i + 1
			for j < len(q) && q[j] >= '0' && q[j] <= '9' {
				j++
			}
			n, _ := strconv.Atoi(q[i+1 : j])
			count++
			maxN = max(maxN, n)
			i = j - 1
		}
	}
	return count, maxN
}

func (q query) params(login string) []any {
	args := make([]any, q.args)
	for i := range args {
		args[i] = login
	}
	return args
}

func (b *Backend) run(ctx context.Context, q query, login string) (*sql.Rows, error) {
	b.queries.Add(1)
	return b.db.QueryContext(ctx, q.text, q.params(login)...)
}

// record is what password_query says about a login.
type record struct {
	hash                string
	enabled             bool
	grants              []string
	quota               *int
	hasGrants, hasQuota bool
}

// record runs password_query: sql.ErrNoRows when the login is unknown.
func (b *Backend) record(ctx context.Context, login string) (*record, error) {
	rows, err := b.run(ctx, b.pwQ, login)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return nil, err
		}
		return nil, sql.ErrNoRows
	}
	vals := make([]sql.NullString, len(cols))
	dest := make([]any, len(cols))
	for i := range vals {
		dest[i] = &vals[i]
	}
	if err := rows.Scan(dest...); err != nil {
		return nil, err
	}
	rec := &record{hash: vals[0].String, enabled: true}
	for i := 1; i < len(cols); i++ {
		name := strings.ToLower(cols[i])
		if i == 1 && len(cols) == 2 && !knownColumn(name) {
			name = "enabled"
		}
		v := vals[i]
		switch name {
		case "enabled", "active":
			rec.enabled = !v.Valid || truthy(v.String)
		case "quota":
			rec.hasQuota = true
			if rec.quota, err = parseQuota(v); err != nil {
				return nil, err
			}
		case "grants":
			rec.hasGrants = true
			rec.grants = parseGrants(v.String, rec.grants)
		}
	}
	if rows.Next() {
		return nil, fmt.Errorf("password_query returned more than one row for %s", login)
	}
	return rec, rows.Err()
}

func knownColumn(name string) bool {
	switch name {
	case "enabled", "active", "quota", "grants":
		return true
	}
	return false
}

// truthy reads an enabled column: false, 0, no, off (any case) are false.
func truthy(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "0", "f", "false", "n", "no", "off":
		return false
	}
	return true
}

// parseQuota reads a quota column: NULL or empty is the default (nil), a
// number >= 0 the login's hourly limit (0 unlimited).
func parseQuota(v sql.NullString) (*int, error) {
	s := strings.TrimSpace(v.String)
	if !v.Valid || s == "" {
		return nil, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return nil, fmt.Errorf("quota %q is not a number of recipients per hour", s)
	}
	if n < 0 {
		return nil, nil
	}
	return &n, nil
}

// parseGrants adds the grants in s to out: addresses and @domains
// separated by commas, semicolons or white space; a PostgreSQL array
// literal {a,"b"} also reads. Entries that are not addresses or @domains
// are left out.
func parseGrants(s string, out []string) []string {
	f := strings.FieldsFunc(s, func(r rune) bool {
		return r == ',' || r == ';' || r == ' ' || r == '\t' || r == '\r' || r == '\n' || r == '{' || r == '}' || r == '"'
	})
	for _, g := range f {
		if n, err := userdb.NormaliseGrant(g); err == nil {
			out = append(out, n)
		}
	}
	return out
}

func (b *Backend) grants(ctx context.Context, login string) ([]string, error) {
	rows, err := b.run(ctx, b.grantsQ, login)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var g sql.NullString
		if err := rows.Scan(&g); err != nil {
			return nil, err
		}
		out = parseGrants(g.String, out)
	}
	return out, rows.Err()
}

func (b *Backend) quota(ctx context.Context, login string) (*int, error) {
	rows, err := b.run(ctx, b.quotaQ, login)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	if !rows.Next() {
		return nil, rows.Err()
	}
	var q sql.NullString
	if err := rows.Scan(&q); err != nil {
		return nil, err
	}
	n, err := parseQuota(q)
	if err != nil {
		return nil, err
	}
	return n, rows.Err()
}
