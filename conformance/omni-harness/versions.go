// Reports which upstream module versions the binary was built with (from the Go build info).
package main

import (
	"runtime/debug"
	"strings"
)

var reportedModules = []string{
	"github.com/cosi-project/runtime",
	"github.com/siderolabs/omni/client",
	"github.com/siderolabs/go-api-signature",
}

func moduleVersions() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}

	var parts []string

	for _, dep := range info.Deps {
		for _, want := range reportedModules {
			if dep.Path == want {
				parts = append(parts, dep.Path+"@"+dep.Version)
			}
		}
	}

	return strings.Join(parts, " ")
}
