// dockerfile-lint runs BuildKit's Dockerfile checks (the rules `docker build --check` applies) on a Dockerfile,
// without a Docker engine or a registry: base images are answered locally with a minimal Linux image config, so
// nothing leaves this machine. It prints each finding and exits 1 when there is any, 2 when it cannot run.
//
//	go run . ../../Dockerfile
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	"github.com/moby/buildkit/frontend/dockerui"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// offlineImages answers every base image with the same minimal config instead of asking a registry.
type offlineImages struct{}

func (offlineImages) ResolveImageConfig(_ context.Context, ref string, opt sourceresolver.Opt) (string, digest.Digest, []byte, error) {
	platform := ocispecs.Platform{OS: "linux", Architecture: runtime.GOARCH}
	if opt.ImageOpt != nil && opt.ImageOpt.Platform != nil {
		platform = *opt.ImageOpt.Platform
	}
	img := ocispecs.Image{
		Platform: platform,
		Config:   ocispecs.ImageConfig{Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}},
		RootFS:   ocispecs.RootFS{Type: "layers"},
	}
	dt, err := json.Marshal(img)
	if err != nil {
		return "", "", nil, err
	}
	return ref, digest.FromBytes(dt), dt, nil
}

// sourceMap names the Dockerfile in the findings; the lint results want it with an (empty) LLB definition.
func sourceMap(path string, dt []byte) *llb.SourceMap {
	sm := llb.NewSourceMap(nil, path, "Dockerfile", dt)
	sm.Definition = &llb.Definition{}
	return sm
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: dockerfile-lint DOCKERFILE")
		os.Exit(2)
	}
	path := os.Args[1]
	dt, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dockerfile-lint:", err)
		os.Exit(2)
	}
	opt := dockerfile2llb.ConvertOpt{
		Config:       dockerui.Config{},
		SourceMap:    sourceMap(path, dt),
		MetaResolver: offlineImages{},
	}
	res, err := dockerfile2llb.DockerfileLint(context.Background(), dt, opt)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dockerfile-lint:", err)
		os.Exit(2)
	}
	findings := 0
	for _, w := range res.Warnings {
		line := 0
		if w.Location != nil && len(w.Location.Ranges) > 0 {
			line = int(w.Location.Ranges[0].Start.Line)
		}
		fmt.Printf("%s:%d: %s: %s\n", path, line, w.RuleName, w.Detail)
		findings++
	}
	if res.Error != nil {
		fmt.Printf("%s: error: %s\n", path, res.Error.Message)
		findings++
	}
	if findings > 0 {
		fmt.Printf("dockerfile-lint: %d finding(s) in %s\n", findings, path)
		os.Exit(1)
	}
	fmt.Printf("dockerfile-lint: %s passes BuildKit's checks\n", path)
}
