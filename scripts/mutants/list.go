package main

import (
	"bytes"
	"fmt"
	"strings"
)

// mutant is one planted bug: in file, the snippet find (which must occur exactly once)
// becomes replace, breaking the one rule it names.
type mutant struct {
	name, file, rule string
	find, replace    string
	line             int // of the list, for messages
}

// apply returns src with the mutant planted, or says why it no longer fits.
func (m mutant) apply(src []byte) ([]byte, error) {
	switch n := bytes.Count(src, []byte(m.find)); n {
	case 1:
		return bytes.Replace(src, []byte(m.find), []byte(m.replace), 1), nil
	case 0:
		return nil, fmt.Errorf("%s: the snippet of mutant %s (list line %d) is not there any more: the code changed, so update the mutant or drop it", m.file, m.name, m.line)
	default:
		return nil, fmt.Errorf("%s: the snippet of mutant %s (list line %d) occurs %d times: make it longer, so that it names one place", m.file, m.name, m.line, n)
	}
}

// parseList reads the mutant list: "mutant NAME", then "file:" and "rule:" lines, then
// the snippet's lines each after a "-" and the replacement's each after a "+", taken
// verbatim (tabs included). Lines starting with # and blank lines between mutants are
// comments.
func parseList(text string) ([]mutant, error) {
	var out []mutant
	var cur *mutant
	var find, repl []string
	seen := map[string]bool{}
	finish := func() error {
		if cur == nil {
			return nil
		}
		cur.find, cur.replace = strings.Join(find, "\n"), strings.Join(repl, "\n")
		switch {
		case cur.file == "" || cur.rule == "":
			return fmt.Errorf("line %d: mutant %s needs a file: and a rule: line", cur.line, cur.name)
		case len(find) == 0:
			return fmt.Errorf("line %d: mutant %s has no snippet (lines starting with -)", cur.line, cur.name)
		case cur.find == cur.replace:
			return fmt.Errorf("line %d: mutant %s changes nothing", cur.line, cur.name)
		}
		out = append(out, *cur)
		cur, find, repl = nil, nil, nil
		return nil
	}
	for i, l := range strings.Split(text, "\n") {
		n := i + 1
		switch {
		case strings.HasPrefix(l, "mutant "):
			if err := finish(); err != nil {
				return nil, err
			}
			name := strings.TrimSpace(strings.TrimPrefix(l, "mutant "))
			if name == "" || strings.ContainsAny(name, " \t") {
				return nil, fmt.Errorf("line %d: a mutant's name is one word", n)
			}
			if seen[name] {
				return nil, fmt.Errorf("line %d: mutant %s is listed twice", n, name)
			}
			seen[name] = true
			cur = &mutant{name: name, line: n}
		case cur != nil && strings.HasPrefix(l, "-"):
			if len(repl) > 0 {
				return nil, fmt.Errorf("line %d: mutant %s: snippet lines (-) come before the replacement's (+)", n, cur.name)
			}
			find = append(find, l[1:])
		case cur != nil && strings.HasPrefix(l, "+"):
			repl = append(repl, l[1:])
		case cur != nil && strings.HasPrefix(l, "file:"):
			cur.file = strings.TrimSpace(strings.TrimPrefix(l, "file:"))
		case cur != nil && strings.HasPrefix(l, "rule:"):
			cur.rule = strings.TrimSpace(strings.TrimPrefix(l, "rule:"))
		case strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#"):
			if cur != nil && len(find) > 0 {
				if err := finish(); err != nil {
					return nil, err
				}
			}
		default:
			return nil, fmt.Errorf("line %d: not part of a mutant (mutant, file:, rule:, -, + or #): %q", n, l)
		}
	}
	if err := finish(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no mutants")
	}
	return out, nil
}
