// Signed-call verification as Omni runs it: go-api-signature parses and checks the siderov1 headers, the keys
// are the public halves tests registered (with identity, role and expiry), and the caller is attached to the context.
package main

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	pgpcrypto "github.com/ProtonMail/gopenpgp/v3/crypto"
	"github.com/siderolabs/go-api-signature/pkg/message"
	"github.com/siderolabs/go-api-signature/pkg/pgp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Roles in Omni's order (None < InfraProvider < Reader < Auditor < Operator < Admin).
var roleRank = map[string]int{"None": 0, "InfraProvider": 1, "Reader": 2, "Auditor": 3, "Operator": 4, "Admin": 5}

const infraProviderIdentitySuffix = "@infra-provider.serviceaccount.omni.sidero.dev"

type registeredKey struct {
	key        *pgp.Key
	identity   string
	role       string
	expiration time.Time
}

// caller is the authenticated identity of a call.
type caller struct {
	identity        string
	role            string
	infraProviderID string
}

type callerKey struct{}

func callerFrom(ctx context.Context) (caller, bool) {
	c, ok := ctx.Value(callerKey{}).(caller)

	return c, ok
}

type keyRegistry struct {
	mu   sync.Mutex
	keys map[string]*registeredKey
}

func newKeyRegistry() *keyRegistry {
	return &keyRegistry{keys: map[string]*registeredKey{}}
}

func (r *keyRegistry) register(armored, identity, role string, expiration time.Time) (string, error) {
	if _, ok := roleRank[role]; !ok {
		return "", errors.New("unknown role " + role)
	}

	parsed, err := pgpcrypto.NewKeyFromArmored(armored)
	if err != nil {
		return "", err
	}

	key, err := pgp.NewKey(parsed)
	if err != nil {
		return "", err
	}

	fingerprint := key.Fingerprint()

	r.mu.Lock()
	defer r.mu.Unlock()

	r.keys[fingerprint] = &registeredKey{key: key, identity: identity, role: role, expiration: expiration}

	return fingerprint, nil
}

func (r *keyRegistry) expire(fingerprint string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()

	k, ok := r.keys[fingerprint]
	if ok {
		k.expiration = time.Now().Add(-time.Second)
	}

	return ok
}

func (r *keyRegistry) revoke(fingerprint string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()

	_, ok := r.keys[fingerprint]
	delete(r.keys, fingerprint)

	return ok
}

func (r *keyRegistry) lookup(fingerprint string) (*registeredKey, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()

	k, ok := r.keys[fingerprint]

	return k, ok
}

var errInvalidSignature = status.Error(codes.Unauthenticated, "invalid signature")

// authenticate checks one call the way Omni's signature interceptor does; every failure is "invalid signature".
func (r *keyRegistry) authenticate(ctx context.Context, method string) (context.Context, error) {
	md, _ := metadata.FromIncomingContext(ctx)

	msg := message.NewGRPC(md, method)

	signature, err := msg.Signature()
	if err != nil {
		return nil, errInvalidSignature
	}

	registered, ok := r.lookup(signature.KeyFingerprint)
	if !ok || !time.Now().Before(registered.expiration) {
		return nil, errInvalidSignature
	}

	if err = msg.VerifySignature(registered.key); err != nil {
		return nil, errInvalidSignature
	}

	c := caller{identity: registered.identity, role: registered.role}
	if strings.HasSuffix(registered.identity, infraProviderIdentitySuffix) {
		c.infraProviderID = strings.TrimSuffix(registered.identity, infraProviderIdentitySuffix)
	}

	return context.WithValue(ctx, callerKey{}, c), nil
}

func (r *keyRegistry) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	authed, err := r.authenticate(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}

	return handler(authed, req)
}

func (r *keyRegistry) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	authed, err := r.authenticate(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}

	return handler(srv, &contextStream{ServerStream: ss, ctx: authed})
}

type contextStream struct {
	grpc.ServerStream
	ctx context.Context //nolint:containedctx
}

func (s *contextStream) Context() context.Context { return s.ctx }

// recoverUnary turns a handler panic into INTERNAL (Omni runs a recovery interceptor; a short signature header
// makes the upstream parser index out of range).
func recoverUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if p := recover(); p != nil {
			resp, err = nil, status.Error(codes.Internal, "internal error")
		}
	}()

	return handler(ctx, req)
}

func recoverStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = status.Error(codes.Internal, "internal error")
		}
	}()

	return handler(srv, ss)
}

// capabilitySwitches emulate older Omni releases by answering some methods with UNIMPLEMENTED.
type capabilitySwitches struct {
	mu                     sync.Mutex
	teardownRPC            bool
	createSchematicFromRaw bool
}

func (s *capabilitySwitches) available(method string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()

	switch method {
	case "/cosi.resource.State/Teardown", "/cosi.resource.State/TeardownAndDestroy":
		return s.teardownRPC
	case "/management.ManagementService/CreateSchematicFromRaw":
		return s.createSchematicFromRaw
	}

	return true
}

func unknownMethod(fullMethod string) error {
	parts := strings.Split(strings.TrimPrefix(fullMethod, "/"), "/")
	if len(parts) != 2 {
		return status.Error(codes.Unimplemented, "unknown method")
	}

	return status.Errorf(codes.Unimplemented, "unknown method %s for service %s", parts[1], parts[0])
}

func (s *capabilitySwitches) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if !s.available(info.FullMethod) {
		return nil, unknownMethod(info.FullMethod)
	}

	return handler(ctx, req)
}

func (s *capabilitySwitches) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !s.available(info.FullMethod) {
		return unknownMethod(info.FullMethod)
	}

	return handler(srv, ss)
}

// callCounter counts calls per full method path, before authentication.
type callCounter struct {
	mu     sync.Mutex
	counts map[string]int
}

func newCallCounter() *callCounter { return &callCounter{counts: map[string]int{}} }

func (c *callCounter) add(method string) {
	c.mu.Lock()
	c.counts[method]++
	c.mu.Unlock()
}

func (c *callCounter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()

	out := make(map[string]int, len(c.counts))
	for k, v := range c.counts {
		out[k] = v
	}

	return out
}

func (c *callCounter) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	c.add(info.FullMethod)

	return handler(ctx, req)
}

func (c *callCounter) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	c.add(info.FullMethod)

	return handler(srv, ss)
}
