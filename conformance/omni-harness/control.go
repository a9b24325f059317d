// HTTP JSON control surface on 127.0.0.1 for the conformance tests: register keys, seed and read resources as Omni's
// internal actor, switch capabilities, and play Omni's controllers (machine requests, the MachineRequestStatus cleanup
// finalizer, machines joining with a token, request teardown).
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/cosi-project/runtime/api/v1alpha1"
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/protobuf"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/siderolabs/omni/client/pkg/jointoken"
	"github.com/siderolabs/omni/client/pkg/omni/resources/infra"
	"github.com/siderolabs/omni/client/pkg/omni/resources/siderolink"
	"google.golang.org/protobuf/proto"
)

const (
	labelMachineRequest    = "omni.sidero.dev/machine-request"
	labelMachineRequestSet = "omni.sidero.dev/machine-request-set"
	statusCleanupFinalizer = "MachineRequestStatusCleanupController"
	defaultJoinTokenID     = "siderolink-config"
)

type controlSurface struct {
	state    state.State
	keys     *keyRegistry
	switches *capabilitySwitches
	calls    *callCounter
	omni     *omniControllers
	mgmt     *managementService
}

type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &httpError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

func (c *controlSurface) routes() http.Handler {
	mux := http.NewServeMux()

	handle := func(path string, fn func(ctx context.Context, body json.RawMessage) (any, error)) {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			var body json.RawMessage
			if r.Method == http.MethodPost {
				if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
					writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})

					return
				}
			}

			out, err := fn(r.Context(), body)
			if err != nil {
				writeJSON(w, statusOf(err), map[string]string{"error": err.Error()})

				return
			}

			writeJSON(w, http.StatusOK, out)
		})
	}

	handle("/keys/register", c.registerKey)
	handle("/keys/expire", func(_ context.Context, body json.RawMessage) (any, error) {
		return c.keyAction(body, c.keys.expire)
	})
	handle("/keys/revoke", func(_ context.Context, body json.RawMessage) (any, error) {
		return c.keyAction(body, c.keys.revoke)
	})
	handle("/state/get", c.get)
	handle("/state/list", c.list)
	handle("/state/put", c.put)
	handle("/state/destroy", c.destroy)
	handle("/state/finalizer", c.finalizer)
	handle("/capabilities", c.capabilities)
	handle("/calls", func(context.Context, json.RawMessage) (any, error) { return c.calls.snapshot(), nil })
	handle("/omni/machine-request", c.machineRequest)
	handle("/omni/hold-statuses", c.holdStatuses)
	handle("/omni/release-status", c.releaseStatus)
	handle("/omni/join", c.join)
	handle("/omni/delete-machine-request", c.deleteMachineRequest)

	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func statusOf(err error) int {
	var he *httpError

	switch {
	case errors.As(err, &he):
		return he.status
	case state.IsNotFoundError(err):
		return http.StatusNotFound
	case state.IsConflictError(err), state.IsOwnerConflictError(err), state.IsPhaseConflictError(err):
		return http.StatusConflict
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	}

	return http.StatusInternalServerError
}

func decode[T any](body json.RawMessage) (T, error) {
	var v T

	if err := json.Unmarshal(body, &v); err != nil {
		return v, badRequest("malformed request: %v", err)
	}

	return v, nil
}

// --- keys ---------------------------------------------------------------------------------------------------------

func (c *controlSurface) registerKey(_ context.Context, body json.RawMessage) (any, error) {
	req, err := decode[struct {
		ArmoredPublicKey string `json:"armoredPublicKey"`
		Identity         string `json:"identity"`
		Role             string `json:"role"`
		ExpiresAt        string `json:"expiresAt"`
	}](body)
	if err != nil {
		return nil, err
	}

	expiration := time.Now().Add(365 * 24 * time.Hour)

	if req.ExpiresAt != "" {
		if expiration, err = time.Parse(time.RFC3339, req.ExpiresAt); err != nil {
			return nil, badRequest("expiresAt: %v", err)
		}
	}

	fingerprint, err := c.keys.register(req.ArmoredPublicKey, req.Identity, req.Role, expiration)
	if err != nil {
		return nil, badRequest("key: %v", err)
	}

	return map[string]string{"fingerprint": fingerprint}, nil
}

func (c *controlSurface) keyAction(body json.RawMessage, act func(string) bool) (any, error) {
	req, err := decode[struct {
		Fingerprint string `json:"fingerprint"`
	}](body)
	if err != nil {
		return nil, err
	}

	if !act(req.Fingerprint) {
		return nil, &httpError{status: http.StatusNotFound, msg: "unknown key"}
	}

	return map[string]bool{"ok": true}, nil
}

// --- raw state as the internal actor ------------------------------------------------------------------------------

type pointerRequest struct {
	Namespace string `json:"namespace"`
	Type      string `json:"type"`
	ID        string `json:"id"`
	Owner     string `json:"owner"`
}

func (p pointerRequest) pointer() resource.Pointer {
	return resource.NewMetadata(p.Namespace, p.Type, p.ID, resource.VersionUndefined)
}

func encodeResource(r resource.Resource) (string, error) {
	p, err := protobuf.FromResource(r)
	if err != nil {
		return "", err
	}

	m, err := p.Marshal()
	if err != nil {
		return "", err
	}

	raw, err := proto.Marshal(m)
	if err != nil {
		return "", err
	}

	return base64.StdEncoding.EncodeToString(raw), nil
}

func decodeResource(encoded string) (resource.Resource, error) {
	raw, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		return nil, badRequest("resource is not base64: %v", err)
	}

	var m v1alpha1.Resource

	if err = proto.Unmarshal(raw, &m); err != nil {
		return nil, badRequest("resource is not a cosi.resource.Resource: %v", err)
	}

	p, err := protobuf.Unmarshal(&m)
	if err != nil {
		return nil, badRequest("resource: %v", err)
	}

	r, err := protobuf.UnmarshalResource(p)
	if err != nil {
		return nil, badRequest("resource spec: %v", err)
	}

	return r, nil
}

func (c *controlSurface) get(ctx context.Context, body json.RawMessage) (any, error) {
	req, err := decode[pointerRequest](body)
	if err != nil {
		return nil, err
	}

	r, err := c.state.Get(ctx, req.pointer())
	if err != nil {
		return nil, err
	}

	encoded, err := encodeResource(r)

	return map[string]string{"resource": encoded}, err
}

func (c *controlSurface) list(ctx context.Context, body json.RawMessage) (any, error) {
	req, err := decode[pointerRequest](body)
	if err != nil {
		return nil, err
	}

	items, err := c.state.List(ctx, resource.NewMetadata(req.Namespace, req.Type, "", resource.VersionUndefined))
	if err != nil {
		return nil, err
	}

	out := make([]string, 0, len(items.Items))

	for _, r := range items.Items {
		encoded, encErr := encodeResource(r)
		if encErr != nil {
			return nil, encErr
		}

		out = append(out, encoded)
	}

	return map[string][]string{"resources": out}, nil
}

// put creates the resource, or replaces the stored one's labels, annotations, finalizers, phase and spec.
func (c *controlSurface) put(ctx context.Context, body json.RawMessage) (any, error) {
	req, err := decode[struct {
		Resource string `json:"resource"`
		Owner    string `json:"owner"`
	}](body)
	if err != nil {
		return nil, err
	}

	r, err := decodeResource(req.Resource)
	if err != nil {
		return nil, err
	}

	return c.upsert(ctx, r, req.Owner)
}

// upsert creates r (owned by owner), or updates the stored resource in place keeping its owner and any phase,
// and answers with the stored resource.
func (c *controlSurface) upsert(ctx context.Context, r resource.Resource, owner string) (any, error) {
	current, err := c.state.Get(ctx, r.Metadata())

	switch {
	case state.IsNotFoundError(err):
		r.Metadata().SetVersion(resource.VersionUndefined)

		err = c.state.Create(ctx, r, state.WithCreateOwner(owner))
	case err != nil:
		return nil, err
	default:
		r.Metadata().SetVersion(current.Metadata().Version())

		err = c.state.Update(ctx, r, state.WithUpdateOwner(current.Metadata().Owner()), state.WithExpectedPhaseAny())
	}

	if err != nil {
		return nil, err
	}

	encoded, err := encodeResource(r)

	return map[string]string{"resource": encoded}, err
}

func (c *controlSurface) destroy(ctx context.Context, body json.RawMessage) (any, error) {
	req, err := decode[pointerRequest](body)
	if err != nil {
		return nil, err
	}

	return map[string]bool{"ok": true}, c.state.Destroy(ctx, req.pointer(), state.WithDestroyOwner(req.Owner))
}

func (c *controlSurface) finalizer(ctx context.Context, body json.RawMessage) (any, error) {
	req, err := decode[struct {
		pointerRequest
		Finalizer string `json:"finalizer"`
		Remove    bool   `json:"remove"`
	}](body)
	if err != nil {
		return nil, err
	}

	if req.Remove {
		err = c.state.RemoveFinalizer(ctx, req.pointer(), req.Finalizer)
	} else {
		err = c.state.AddFinalizer(ctx, req.pointer(), req.Finalizer)
	}

	return map[string]bool{"ok": true}, err
}

func (c *controlSurface) capabilities(_ context.Context, body json.RawMessage) (any, error) {
	req, err := decode[struct {
		TeardownRPC            *bool   `json:"teardownRpc"`
		CreateSchematicFromRaw *bool   `json:"createSchematicFromRaw"`
		ImageFactoryURL        *string `json:"imageFactoryUrl"`
	}](body)
	if err != nil {
		return nil, err
	}

	if req.ImageFactoryURL != nil {
		if *req.ImageFactoryURL != "" {
			u, parseErr := url.Parse(*req.ImageFactoryURL)
			if parseErr != nil {
				return nil, badRequest("imageFactoryUrl: %v", parseErr)
			}

			if ip := net.ParseIP(u.Hostname()); ip == nil || !ip.IsLoopback() {
				return nil, badRequest("imageFactoryUrl must point at a loopback address")
			}
		}

		c.mgmt.setFactoryURL(*req.ImageFactoryURL)
	}

	c.switches.mu.Lock()
	defer c.switches.mu.Unlock()

	if req.TeardownRPC != nil {
		c.switches.teardownRPC = *req.TeardownRPC
	}

	if req.CreateSchematicFromRaw != nil {
		c.switches.createSchematicFromRaw = *req.CreateSchematicFromRaw
	}

	return map[string]bool{"teardownRpc": c.switches.teardownRPC, "createSchematicFromRaw": c.switches.createSchematicFromRaw}, nil
}

// --- Omni's controllers ---------------------------------------------------------------------------------------------

type omniControllers struct {
	state state.State

	mu      sync.Mutex
	holding bool
}

func (c *controlSurface) machineRequest(ctx context.Context, body json.RawMessage) (any, error) {
	req, err := decode[struct {
		ProviderID string `json:"providerId"`
		SetID      string `json:"setId"`
		Resource   string `json:"resource"`
	}](body)
	if err != nil {
		return nil, err
	}

	r, err := decodeResource(req.Resource)
	if err != nil {
		return nil, err
	}

	if _, ok := r.(*infra.MachineRequest); !ok {
		return nil, badRequest("not a MachineRequest")
	}

	r.Metadata().SetVersion(resource.VersionUndefined)
	r.Metadata().Labels().Set(labelInfraProviderID, req.ProviderID)
	r.Metadata().Labels().Set(labelMachineRequestSet, req.SetID)

	if err = validateCreate(r); err != nil {
		return nil, badRequest("%v", err)
	}

	if err = c.state.Create(ctx, r, state.WithCreateOwner("")); err != nil {
		return nil, err
	}

	encoded, err := encodeResource(r)

	return map[string]string{"resource": encoded}, err
}

// holdStatuses puts MachineRequestStatusCleanupController on every new MachineRequestStatus; with autoRelease it
// is dropped once the status is torn down.
func (c *controlSurface) holdStatuses(_ context.Context, body json.RawMessage) (any, error) {
	req, err := decode[struct {
		AutoRelease bool `json:"autoRelease"`
	}](body)
	if err != nil {
		return nil, err
	}

	c.omni.mu.Lock()
	already := c.omni.holding
	c.omni.holding = true
	c.omni.mu.Unlock()

	if already {
		return map[string]bool{"ok": true}, nil
	}

	events := make(chan state.Event)
	kind := resource.NewMetadata(nsInfraProvider, infra.MachineRequestStatusType, "", resource.VersionUndefined)

	if err = c.state.WatchKind(context.Background(), kind, events, state.WithBootstrapContents(true)); err != nil {
		return nil, err
	}

	go func() {
		for e := range events {
			if e.Resource == nil || (e.Type != state.Created && e.Type != state.Updated) {
				continue
			}

			md := e.Resource.Metadata()
			held := md.Finalizers().Has(statusCleanupFinalizer)

			switch {
			case md.Phase() == resource.PhaseRunning && !held && e.Type == state.Created:
				_ = c.state.AddFinalizer(context.Background(), md, statusCleanupFinalizer)
			case md.Phase() == resource.PhaseTearingDown && held && req.AutoRelease:
				_ = c.state.RemoveFinalizer(context.Background(), md, statusCleanupFinalizer)
			}
		}
	}()

	return map[string]bool{"ok": true}, nil
}

func (c *controlSurface) releaseStatus(ctx context.Context, body json.RawMessage) (any, error) {
	req, err := decode[struct {
		ID string `json:"id"`
	}](body)
	if err != nil {
		return nil, err
	}

	ptr := resource.NewMetadata(nsInfraProvider, infra.MachineRequestStatusType, req.ID, resource.VersionUndefined)
	if err = c.state.RemoveFinalizer(ctx, ptr, statusCleanupFinalizer); err != nil && !state.IsNotFoundError(err) {
		return nil, err
	}

	return map[string]bool{"ok": true}, nil
}

// join validates a machine's join token as Omni's SideroLink provisioning does and records the registration.
func (c *controlSurface) join(ctx context.Context, body json.RawMessage) (any, error) {
	req, err := decode[struct {
		UUID  string `json:"uuid"`
		Token string `json:"token"`
	}](body)
	if err != nil {
		return nil, err
	}

	unauthorized := &httpError{status: http.StatusForbidden, msg: "unauthorized"}

	token, err := jointoken.Parse(req.Token)
	if err != nil {
		return nil, &httpError{status: http.StatusForbidden, msg: "invalid join token " + err.Error()}
	}

	providerID, named := token.ExtraData[labelInfraProviderID]

	var secret string

	if token.Version == jointoken.Version2 && named {
		cfg, getErr := c.state.Get(ctx, resource.NewMetadata(nsInfraProvider, siderolink.ProviderJoinConfigType, providerID, resource.VersionUndefined))
		if getErr != nil {
			return nil, unauthorized
		}

		typed, ok := cfg.(*siderolink.ProviderJoinConfig)
		if !ok {
			return nil, unauthorized
		}

		secret = typed.TypedSpec().Value.GetJoinToken()
	} else {
		params, getErr := c.state.Get(ctx, resource.NewMetadata("default", siderolink.ConnectionParamsType, defaultJoinTokenID, resource.VersionUndefined))
		if getErr != nil {
			return nil, unauthorized
		}

		typed, ok := params.(*siderolink.ConnectionParams)
		if !ok {
			return nil, unauthorized
		}

		secret = typed.TypedSpec().Value.GetJoinToken()
	}

	if secret == "" || !token.IsValid(secret) {
		return nil, unauthorized
	}

	if !named {
		return nil, badRequest("the join token does not name an infra provider")
	}

	reg := infra.NewMachineRegistration(req.UUID)
	reg.Metadata().Labels().Set(labelInfraProviderID, providerID)

	if requestID, ok := token.ExtraData[labelMachineRequest]; ok {
		reg.Metadata().Labels().Set(labelMachineRequest, requestID)
	}

	return c.upsert(ctx, reg, "")
}

func (c *controlSurface) deleteMachineRequest(ctx context.Context, body json.RawMessage) (any, error) {
	req, err := decode[struct {
		ID        string `json:"id"`
		TimeoutMs int    `json:"timeoutMs"`
	}](body)
	if err != nil {
		return nil, err
	}

	if req.TimeoutMs <= 0 {
		req.TimeoutMs = 30_000
	}

	ctx, cancel := context.WithTimeout(ctx, time.Duration(req.TimeoutMs)*time.Millisecond)
	defer cancel()

	ptr := resource.NewMetadata(nsInfraProvider, infra.MachineRequestType, req.ID, resource.VersionUndefined)

	return map[string]bool{"ok": true}, c.state.TeardownAndDestroy(ctx, ptr, state.WithTeardownAndDestroyOwner(""))
}
