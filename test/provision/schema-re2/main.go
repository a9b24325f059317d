// Compiles every pattern of the provider-data JSON Schema with Go's regexp (RE2, as Omni's santhosh-tekuri/jsonschema
// uses it) and matches each against the samples. Input on stdin: {"patterns": [...], "samples": [...]}. Output:
// [{"pattern": p, "error": "...", "matches": [bool per sample]}]. Standard library only (no module, no network).
package main

import (
	"encoding/json"
	"os"
	"regexp"
)

type input struct {
	Patterns []string `json:"patterns"`
	Samples  []string `json:"samples"`
}

type result struct {
	Pattern string `json:"pattern"`
	Error   string `json:"error,omitempty"`
	Matches []bool `json:"matches"`
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(2)
	}
	out := make([]result, 0, len(in.Patterns))
	for _, p := range in.Patterns {
		r := result{Pattern: p, Matches: []bool{}}
		re, err := regexp.Compile(p)
		if err != nil {
			r.Error = err.Error()
		} else {
			for _, s := range in.Samples {
				r.Matches = append(r.Matches, re.MatchString(s))
			}
		}
		out = append(out, r)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		os.Exit(2)
	}
}
