package main

import (
	"fmt"
	"sort"
	"strings"
)

// Report collects the findings of every check: errors fail the run, notes do not.
type Report struct {
	Errors []string
	Notes  []string
	Passed map[string]int // check name -> objects/items it passed
}

func NewReport() *Report { return &Report{Passed: map[string]int{}} }

func (r *Report) Errorf(where, format string, args ...any) {
	r.Errors = append(r.Errors, where+": "+fmt.Sprintf(format, args...))
}

func (r *Report) Notef(where, format string, args ...any) {
	note := where + ": " + fmt.Sprintf(format, args...)
	for _, n := range r.Notes {
		if n == note {
			return
		}
	}
	r.Notes = append(r.Notes, note)
}

func (r *Report) Pass(check string) { r.Passed[check]++ }

// HasError tells whether an error contains all the given fragments (used by the tests).
func (r *Report) HasError(fragments ...string) bool {
	for _, e := range r.Errors {
		ok := true
		for _, f := range fragments {
			if !strings.Contains(e, f) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func (r *Report) String() string {
	var b strings.Builder
	names := make([]string, 0, len(r.Passed))
	for k := range r.Passed {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, "  ok    %-44s %d\n", n, r.Passed[n])
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "  note  %s\n", n)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(&b, "  FAIL  %s\n", e)
	}
	return b.String()
}
