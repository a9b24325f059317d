// Command omni-harness serves upstream's COSI State gRPC service (cosi-project/runtime in-memory state, Omni's
// registered resource types, go-api-signature verification) behind our model of Omni's infra-provider access rules,
// plus an HTTP JSON control port through which conformance tests seed resources and play Omni's controllers.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/cosi-project/runtime/api/v1alpha1"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/cosi-project/runtime/pkg/state/impl/inmem"
	"github.com/cosi-project/runtime/pkg/state/impl/namespaced"
	"github.com/cosi-project/runtime/pkg/state/protobuf/server"
	"github.com/siderolabs/omni/client/api/omni/management"
	"google.golang.org/grpc"

	// Registers Omni's resource types with the COSI protobuf registry, so specs decode and encode as in Omni.
	_ "github.com/siderolabs/omni/client/pkg/omni/resources/infra"
	_ "github.com/siderolabs/omni/client/pkg/omni/resources/omni"
	_ "github.com/siderolabs/omni/client/pkg/omni/resources/siderolink"
	_ "github.com/siderolabs/omni/client/pkg/omni/resources/system"
)

// readyLine is printed once on stdout when both listeners are up.
type readyLine struct {
	GRPCPort    int    `json:"grpcPort"`
	ControlPort int    `json:"controlPort"`
	Versions    string `json:"versions"`
}

func main() {
	grpcAddr := flag.String("grpc-listen", "127.0.0.1:0", "address of the COSI State / Management gRPC listener")
	controlAddr := flag.String("control-listen", "127.0.0.1:0", "address of the HTTP JSON control listener")
	exitOnStdinClose := flag.Bool("exit-on-stdin-close", true, "exit when stdin reaches EOF (the test process went away)")
	flag.Parse()

	if err := run(*grpcAddr, *controlAddr, *exitOnStdinClose); err != nil {
		fmt.Fprintf(os.Stderr, "omni-harness: %v\n", err)
		os.Exit(1)
	}
}

func run(grpcAddr, controlAddr string, exitOnStdinClose bool) error {
	for _, addr := range []string{grpcAddr, controlAddr} {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return err
		}

		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			return fmt.Errorf("refusing to listen on %q: loopback addresses only", addr)
		}
	}

	backing := state.WrapCore(namespaced.NewState(inmem.Build))
	if err := seedDefinitions(context.Background(), backing); err != nil {
		return fmt.Errorf("seeding resource definitions: %w", err)
	}
	keys := newKeyRegistry()
	switches := &capabilitySwitches{teardownRPC: true, createSchematicFromRaw: true}
	calls := newCallCounter()
	omni := &omniControllers{state: backing}

	guarded := &providerAccess{inner: backing}

	grpcServer := grpc.NewServer(
		grpc.MaxRecvMsgSize(32<<20),
		grpc.MaxSendMsgSize(32<<20),
		grpc.ChainUnaryInterceptor(calls.unary, recoverUnary, switches.unary, keys.unary),
		grpc.ChainStreamInterceptor(calls.stream, recoverStream, switches.stream, keys.stream),
	)
	v1alpha1.RegisterStateServer(grpcServer, server.NewState(guarded))
	mgmt := &managementService{switches: switches}
	management.RegisterManagementServiceServer(grpcServer, mgmt)

	grpcListener, err := net.Listen("tcp", grpcAddr)
	if err != nil {
		return err
	}

	controlListener, err := net.Listen("tcp", controlAddr)
	if err != nil {
		return err
	}

	control := &controlSurface{state: backing, keys: keys, switches: switches, calls: calls, omni: omni, mgmt: mgmt}
	httpServer := &http.Server{Handler: control.routes(), ReadHeaderTimeout: 10 * time.Second}

	errs := make(chan error, 3)

	go func() { errs <- grpcServer.Serve(grpcListener) }()
	go func() { errs <- httpServer.Serve(controlListener) }()

	if exitOnStdinClose {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			errs <- nil
		}()
	}

	line, err := json.Marshal(readyLine{
		GRPCPort:    grpcListener.Addr().(*net.TCPAddr).Port,
		ControlPort: controlListener.Addr().(*net.TCPAddr).Port,
		Versions:    moduleVersions(),
	})
	if err != nil {
		return err
	}

	fmt.Println(string(line))

	err = <-errs

	grpcServer.Stop()
	_ = httpServer.Close()

	return err
}
