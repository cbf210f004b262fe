package main

// The admin API against its description, docs/openapi.yaml: every answer
// the tests see is checked against the documented status, fields and types.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// ---------------------------------------------------------------- the document

// admSpec is docs/openapi.yaml, parsed.
type admSpec struct {
	root map[string]any
	mu   sync.Mutex
	seen map[string]bool // "METHOD /doc/path STATUS" answered by the server
}

var (
	admSpecOnce sync.Once
	admSpecDoc  *admSpec
	admSpecErr  error
)

func admLoadSpec(t testing.TB) *admSpec {
	t.Helper()
	admSpecOnce.Do(func() {
		data, err := os.ReadFile(filepath.Join("..", "..", "docs", "openapi.yaml"))
		if err != nil {
			admSpecErr = err
			return
		}
		var root map[string]any
		if err := yaml.Unmarshal(data, &root); err != nil {
			admSpecErr = fmt.Errorf("docs/openapi.yaml is not valid YAML: %w", err)
			return
		}
		admSpecDoc = &admSpec{root: root, seen: map[string]bool{}}
	})
	if admSpecErr != nil {
		t.Fatal(admSpecErr)
	}
	return admSpecDoc
}

func admMap(v any) map[string]any { m, _ := v.(map[string]any); return m }

// resolve follows a local $ref ("#/components/...").
func (d *admSpec) resolve(v any) map[string]any {
	m := admMap(v)
	for m != nil && m["$ref"] != nil {
		ref, _ := m["$ref"].(string)
		var cur any = d.root
		for _, p := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			cur = admMap(cur)[p]
		}
		m = admMap(cur)
	}
	return m
}

// operations lists "METHOD /path" of the document.
func (d *admSpec) operations() []string {
	var out []string
	for p, item := range admMap(d.root["paths"]) {
		for m := range admMap(item) {
			if m != "parameters" {
				out = append(out, strings.ToUpper(m)+" "+p)
			}
		}
	}
	sort.Strings(out)
	return out
}

// find returns the document path and operation that a request path matches.
func (d *admSpec) find(method, path string) (string, map[string]any) {
	segs := strings.Split(strings.SplitN(path, "?", 2)[0], "/")
	for p, item := range admMap(d.root["paths"]) {
		ps := strings.Split(p, "/")
		if len(ps) != len(segs) {
			continue
		}
		ok := true
		for i := range ps {
			if !(strings.HasPrefix(ps[i], "{") && segs[i] != "") && ps[i] != segs[i] {
				ok = false
				break
			}
		}
		if op := admMap(admMap(item)[strings.ToLower(method)]); ok && op != nil {
			return p, op
		}
	}
	return "", nil
}

// check records the answer and reports where it departs from the document.
func (d *admSpec) check(method, path string, status int, header http.Header, body []byte) []string {
	docPath, op := d.find(method, path)
	if op == nil {
		return nil // not a documented call (unknown path, wrong method)
	}
	key := fmt.Sprintf("%s %s %d", method, docPath, status)
	d.mu.Lock()
	d.seen[key] = true
	d.mu.Unlock()
	resp, ok := admMap(op["responses"])[fmt.Sprint(status)]
	if !ok {
		return []string{fmt.Sprintf("%s %s answered %d, which docs/openapi.yaml does not list for %s %s", method, path, status, method, docPath)}
	}
	schema := d.resolve(admMap(admMap(d.resolve(resp)["content"])["application/json"])["schema"])
	if schema == nil {
		if len(body) != 0 {
			return []string{fmt.Sprintf("%s %s %d: documented without a body, got %q", method, path, status, body)}
		}
		return nil
	}
	if ct := header.Get("Content-Type"); ct != "application/json" {
		return []string{fmt.Sprintf("%s %s %d: Content-Type %q, want application/json", method, path, status, ct)}
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return []string{fmt.Sprintf("%s %s %d: body is not JSON: %v\n%s", method, path, status, err, body)}
	}
	return d.validate(schema, v, fmt.Sprintf("%s %s %d: body", method, path, status))
}

// validate checks v against the subset of JSON Schema the document uses.
func (d *admSpec) validate(schema map[string]any, v any, at string) []string {
	schema = d.resolve(schema)
	var errs []string
	for _, sub := range admList(schema["allOf"]) {
		errs = append(errs, d.validate(admMap(sub), v, at)...)
	}
	if types := admTypes(schema["type"]); len(types) > 0 && !slices.Contains(types, admTypeOf(v)) &&
		!(admTypeOf(v) == "integer" && slices.Contains(types, "number")) {
		return append(errs, fmt.Sprintf("%s is %s %v, want %v", at, admTypeOf(v), v, types))
	}
	if enum := admList(schema["enum"]); enum != nil && !slices.Contains(enum, v) {
		errs = append(errs, fmt.Sprintf("%s = %v, want one of %v", at, v, enum))
	}
	if schema["format"] == "date-time" {
		if s, ok := v.(string); ok {
			if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
				errs = append(errs, fmt.Sprintf("%s = %q is not an RFC 3339 date-time", at, s))
			}
		}
	}
	switch x := v.(type) {
	case map[string]any:
		props := admMap(schema["properties"])
		for _, r := range admList(schema["required"]) {
			if _, ok := x[r.(string)]; !ok {
				errs = append(errs, fmt.Sprintf("%s lacks the required field %q", at, r))
			}
		}
		for k, fv := range x {
			if ps, ok := props[k]; ok {
				errs = append(errs, d.validate(admMap(ps), fv, at+"."+k)...)
			} else if schema["additionalProperties"] == false {
				errs = append(errs, fmt.Sprintf("%s has the field %q, which docs/openapi.yaml does not describe", at, k))
			}
		}
	case []any:
		if items := admMap(schema["items"]); items != nil {
			for i, e := range x {
				errs = append(errs, d.validate(items, e, fmt.Sprintf("%s[%d]", at, i))...)
			}
		}
	}
	return errs
}

func admList(v any) []any { l, _ := v.([]any); return l }

func admTypes(v any) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case []any:
		var out []string
		for _, e := range x {
			out = append(out, fmt.Sprint(e))
		}
		return out
	}
	return nil
}

func admTypeOf(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case float64:
		if x == float64(int64(x)) {
			return "integer"
		}
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// TestAdminAPIDocMatchesRoutes: the operations of docs/openapi.yaml are
// exactly the server's routes; each lists 401, and each that takes a body
// lists 400.
func TestAdminAPIDocMatchesRoutes(t *testing.T) {
	d := admLoadSpec(t)
	var routes []string
	for _, r := range adminRoutes {
		routes = append(routes, r.method+" "+r.path)
	}
	sort.Strings(routes)
	if doc := d.operations(); strings.Join(doc, "\n") != strings.Join(routes, "\n") {
		t.Errorf("docs/openapi.yaml operations:\n%s\nserver routes (admin.go):\n%s", strings.Join(doc, "\n"), strings.Join(routes, "\n"))
	}
	for _, op := range d.operations() {
		method, path, _ := strings.Cut(op, " ")
		_, o := d.find(method, path)
		resp := admMap(o["responses"])
		if resp["401"] == nil {
			t.Errorf("%s does not document 401", op)
		}
		if o["requestBody"] != nil && resp["400"] == nil {
			t.Errorf("%s takes a body but does not document 400", op)
		}
	}
}
