package main

import (
	"bytes"
	"fmt"

	kjson "sigs.k8s.io/json"
)

// decodeMap decodes JSON the way the API server does: case-sensitive, integers kept as int64.
func decodeMap(js []byte) (map[string]any, error) {
	var m map[string]any
	if err := kjson.UnmarshalCaseSensitivePreserveInts(js, &m); err != nil {
		return nil, err
	}
	return m, nil
}

// strictDecode decodes into a typed value, rejecting unknown and duplicate fields (like
// kubectl apply --validate=strict) and fields spelled with the wrong case.
func strictDecode(js []byte, into any) error {
	strictErrs, err := kjson.UnmarshalStrict(js, into)
	if err != nil {
		return err
	}
	if len(strictErrs) > 0 {
		var b bytes.Buffer
		for i, e := range strictErrs {
			if i > 0 {
				b.WriteString("; ")
			}
			b.WriteString(e.Error())
		}
		return fmt.Errorf("%s", b.String())
	}
	return nil
}

// get walks a generic map.
func get(m any, path ...string) any {
	cur := m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}

func str(m any, path ...string) string {
	s, _ := get(m, path...).(string)
	return s
}

func list(m any, path ...string) []any {
	l, _ := get(m, path...).([]any)
	return l
}

func mapAt(m any, path ...string) map[string]any {
	mm, _ := get(m, path...).(map[string]any)
	return mm
}
