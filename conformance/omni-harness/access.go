// Our model of Omni's authorization for infra-provider identities (omni-protocol.md §2.7, §4.0), written as a
// state.CoreState wrapper around the upstream in-memory state: namespaces, label scoping, read-only kinds, ID checks,
// MachineRequest validation, and role rules for Omni's own kinds.
package main

import (
	"bytes"
	"context"
	"strings"

	"github.com/blang/semver/v4"
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/protobuf"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/siderolabs/omni/client/pkg/omni/resources/infra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	nsInfraProvider          = "infra-provider"
	nsInfraProviderEphemeral = "infra-provider-ephemeral"
	nsProviderPrefix         = "infra-provider:"
	privateTypeSuffix        = ".infraprovider.sidero.dev"
	labelInfraProviderID     = "omni.sidero.dev/infra-provider-id"
)

type kindRules struct {
	readOnlyForProviders bool
	checkID              bool
	onlyAdminCanRead     bool
}

var providerKinds = map[resource.Type]kindRules{
	"MachineRequests.omni.sidero.dev":             {readOnlyForProviders: true},
	"MachineRequestStatuses.omni.sidero.dev":      {},
	"InfraMachines.omni.sidero.dev":               {readOnlyForProviders: true},
	"InfraMachineStatuses.omni.sidero.dev":        {},
	"InfraProviderStatuses.omni.sidero.dev":       {checkID: true},
	"InfraProviderHealthStatuses.omni.sidero.dev": {checkID: true},
	"InfraProviders.omni.sidero.dev":              {checkID: true},
	"ConfigPatchRequests.omni.sidero.dev":         {},
	"BMCConfigs.omni.sidero.dev":                  {onlyAdminCanRead: true, readOnlyForProviders: true},
	"InfraMachineRegistrations.omni.sidero.dev":   {readOnlyForProviders: true},
	"ProviderJoinConfigs.omni.sidero.dev":         {readOnlyForProviders: true},
}

// Omni's own kinds a provider may read with role InfraProvider, and those any signed caller may read.
var (
	readableAsInfraProvider = map[resource.Type]bool{
		"Machines.omni.sidero.dev":             true,
		"SiderolinkAPIConfigs.omni.sidero.dev": true,
		"ConnectionParams.omni.sidero.dev":     true,
	}
	readableWhenSigned = map[resource.Type]bool{
		"Namespaces.meta.cosi.dev":           true,
		"ResourceDefinitions.meta.cosi.dev":  true,
		"FeaturesConfigs.omni.sidero.dev":    true,
		"TalosExtensions.omni.sidero.dev":    true,
		"TalosVersions.omni.sidero.dev":      true,
		"KubernetesVersions.omni.sidero.dev": true,
		"InstallationMedias.omni.sidero.dev": true,
		"SysVersions.system.sidero.dev":      true,
	}
)

func rulesFor(ns resource.Namespace, typ resource.Type) (kindRules, bool) {
	if strings.HasPrefix(ns, nsProviderPrefix) {
		return kindRules{}, true
	}

	r, ok := providerKinds[typ]

	return r, ok
}

// scope is what the access check decided for one call.
type scope struct {
	rules kindRules
	// labelScope is the provider ID results must carry as label (shared namespaces); "" when no scoping applies.
	labelScope string
}

type providerAccess struct {
	inner state.CoreState
}

func notFound() error { return status.Error(codes.NotFound, "not found") }

func (a *providerAccess) check(ctx context.Context, ns resource.Namespace, typ resource.Type, read bool) (scope, error) {
	c, ok := callerFrom(ctx)
	if !ok {
		return scope{}, status.Error(codes.Unauthenticated, "invalid signature")
	}

	rules, providerKind := rulesFor(ns, typ)
	if !providerKind {
		return scope{}, omniKindAccess(c, typ, read)
	}

	if roleRank[c.role] < roleRank["InfraProvider"] {
		return scope{}, insufficientRole(c.role)
	}

	if c.role == "InfraProvider" {
		if _, err := a.inner.Get(ctx, resource.NewMetadata(nsInfraProvider, infra.ProviderType, c.infraProviderID, resource.VersionUndefined)); err != nil {
			if state.IsNotFoundError(err) {
				return scope{}, status.Errorf(codes.PermissionDenied, "infra provider with name %q is not registered in the system", c.infraProviderID)
			}

			return scope{}, err
		}

		switch {
		case ns == nsInfraProvider || ns == nsInfraProviderEphemeral:
			return scope{rules: rules, labelScope: c.infraProviderID}, nil
		case ns == nsProviderPrefix+c.infraProviderID:
			suffix := "." + c.infraProviderID + privateTypeSuffix
			if !strings.HasSuffix(typ, suffix) {
				return scope{}, status.Errorf(codes.InvalidArgument, "resources in namespace %q must have a type suffix %q", ns, suffix)
			}

			return scope{rules: rules}, nil
		default:
			return scope{}, status.Errorf(codes.PermissionDenied, "namespace not allowed, must be one of: %s, %s, %s",
				nsInfraProvider, nsInfraProviderEphemeral, nsProviderPrefix+c.infraProviderID)
		}
	}

	if !read && typ != infra.ProviderType && typ != infra.MachineRequestType {
		return scope{}, status.Errorf(codes.PermissionDenied, "users are not allowed to modify %q resources", typ)
	}

	if !read && typ == infra.MachineRequestType && roleRank[c.role] < roleRank["Operator"] {
		return scope{}, status.Errorf(codes.PermissionDenied, "only operators and admins are allowed to modify %q resources", typ)
	}

	if rules.onlyAdminCanRead && c.role != "Admin" {
		return scope{}, status.Errorf(codes.PermissionDenied, "only admins are allowed to read %q resources", typ)
	}

	return scope{rules: rules}, nil
}

func insufficientRole(role string) error {
	return status.Errorf(codes.PermissionDenied, "unauthorized: access denied: insufficient role: %q", role)
}

func omniKindAccess(c caller, typ resource.Type, read bool) error {
	switch {
	case readableAsInfraProvider[typ]:
		if roleRank[c.role] < roleRank["InfraProvider"] {
			return insufficientRole(c.role)
		}
	case readableWhenSigned[typ]:
	case c.role == "Admin":
		return nil
	default:
		return status.Error(codes.PermissionDenied, "no access is permitted")
	}

	if !read {
		return status.Error(codes.PermissionDenied, "only read access is permitted")
	}

	return nil
}

func carries(r resource.Resource, providerID string) bool {
	v, ok := r.Metadata().Labels().Get(labelInfraProviderID)

	return ok && v == providerID
}

func (a *providerAccess) Get(ctx context.Context, ptr resource.Pointer, opts ...state.GetOption) (resource.Resource, error) {
	sc, err := a.check(ctx, ptr.Namespace(), ptr.Type(), true)
	if err != nil {
		return nil, err
	}

	r, err := a.inner.Get(ctx, ptr, opts...)
	if err != nil {
		return nil, err
	}

	if sc.labelScope != "" && !carries(r, sc.labelScope) {
		return nil, notFound()
	}

	return r, nil
}

func (a *providerAccess) List(ctx context.Context, kind resource.Kind, opts ...state.ListOption) (resource.List, error) {
	sc, err := a.check(ctx, kind.Namespace(), kind.Type(), true)
	if err != nil {
		return resource.List{}, err
	}

	list, err := a.inner.List(ctx, kind, opts...)
	if err != nil || sc.labelScope == "" {
		return list, err
	}

	kept := make([]resource.Resource, 0, len(list.Items))

	for _, item := range list.Items {
		if carries(item, sc.labelScope) {
			kept = append(kept, item)
		}
	}

	return resource.List{Items: kept}, nil
}

func (a *providerAccess) Create(ctx context.Context, r resource.Resource, opts ...state.CreateOption) error {
	md := r.Metadata()

	sc, err := a.check(ctx, md.Namespace(), md.Type(), false)
	if err != nil {
		return err
	}

	if sc.labelScope != "" {
		if sc.rules.readOnlyForProviders {
			return status.Errorf(codes.PermissionDenied, "infra providers are not allowed to create %q resources", md.Type())
		}

		if sc.rules.checkID && md.ID() != sc.labelScope {
			return status.Errorf(codes.InvalidArgument, "resource ID must match the infra provider ID %q", sc.labelScope)
		}

		md.Labels().Set(labelInfraProviderID, sc.labelScope)
	}

	if err = validateCreate(r); err != nil {
		return err
	}

	return a.inner.Create(ctx, r, opts...)
}

func (a *providerAccess) Update(ctx context.Context, next resource.Resource, opts ...state.UpdateOption) error {
	md := next.Metadata()

	sc, err := a.check(ctx, md.Namespace(), md.Type(), false)
	if err != nil {
		return err
	}

	old, err := a.inner.Get(ctx, md)
	if err != nil {
		return err
	}

	if sc.labelScope != "" {
		if sc.rules.readOnlyForProviders && !onlyFinalizersDiffer(old, next) {
			return status.Errorf(codes.PermissionDenied, "infra providers are not allowed to update %q resources other than setting finalizers", md.Type())
		}

		if !carries(old, sc.labelScope) {
			return notFound()
		}

		md.Labels().Set(labelInfraProviderID, sc.labelScope)
	}

	if err = validateUpdate(old, next); err != nil {
		return err
	}

	return a.inner.Update(ctx, next, opts...)
}

func (a *providerAccess) Destroy(ctx context.Context, ptr resource.Pointer, opts ...state.DestroyOption) error {
	sc, err := a.check(ctx, ptr.Namespace(), ptr.Type(), false)
	if err != nil {
		return err
	}

	current, err := a.inner.Get(ctx, ptr)
	if err != nil {
		return err
	}

	if sc.labelScope != "" {
		if sc.rules.readOnlyForProviders {
			return status.Errorf(codes.PermissionDenied, "infra providers are not allowed to destroy %q resources", ptr.Type())
		}

		if !carries(current, sc.labelScope) {
			return notFound()
		}
	}

	return a.inner.Destroy(ctx, ptr, opts...)
}

func (a *providerAccess) Watch(ctx context.Context, ptr resource.Pointer, ch chan<- state.Event, opts ...state.WatchOption) error {
	sc, err := a.check(ctx, ptr.Namespace(), ptr.Type(), true)
	if err != nil {
		return err
	}

	if sc.labelScope == "" {
		return a.inner.Watch(ctx, ptr, ch, opts...)
	}

	return a.inner.Watch(ctx, ptr, filterSingle(ctx, sc.labelScope, ch), opts...)
}

func (a *providerAccess) WatchKind(ctx context.Context, kind resource.Kind, ch chan<- state.Event, opts ...state.WatchKindOption) error {
	sc, err := a.check(ctx, kind.Namespace(), kind.Type(), true)
	if err != nil {
		return err
	}

	if sc.labelScope == "" {
		return a.inner.WatchKind(ctx, kind, ch, opts...)
	}

	return a.inner.WatchKind(ctx, kind, filterSingle(ctx, sc.labelScope, ch), opts...)
}

func (a *providerAccess) WatchKindAggregated(ctx context.Context, kind resource.Kind, ch chan<- []state.Event, opts ...state.WatchKindOption) error {
	sc, err := a.check(ctx, kind.Namespace(), kind.Type(), true)
	if err != nil {
		return err
	}

	if sc.labelScope == "" {
		return a.inner.WatchKindAggregated(ctx, kind, ch, opts...)
	}

	inner := make(chan []state.Event)

	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case batch := <-inner:
				kept := make([]state.Event, 0, len(batch))

				for _, e := range batch {
					if keepEvent(e, sc.labelScope) {
						kept = append(kept, e)
					}
				}

				select {
				case ch <- kept: // an empty batch is passed on, as Omni does
				case <-ctx.Done():
					return
				}
			}
		}
	}()

	return a.inner.WatchKindAggregated(ctx, kind, inner, opts...)
}

func keepEvent(e state.Event, providerID string) bool {
	if e.Type == state.Bootstrapped || e.Type == state.Errored || e.Resource == nil {
		return true
	}

	return carries(e.Resource, providerID)
}

func filterSingle(ctx context.Context, providerID string, out chan<- state.Event) chan state.Event {
	inner := make(chan state.Event)

	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case e := <-inner:
				if !keepEvent(e, providerID) {
					continue
				}

				select {
				case out <- e:
				case <-ctx.Done():
					return
				}
			}
		}
	}()

	return inner
}

// onlyFinalizersDiffer: everything but version and finalizers must be unchanged (spec compared by its encoding).
func onlyFinalizersDiffer(old, next resource.Resource) bool {
	a, b := old.Metadata(), next.Metadata()
	if a.Namespace() != b.Namespace() || a.Type() != b.Type() || a.ID() != b.ID() || a.Phase() != b.Phase() || a.Owner() != b.Owner() {
		return false
	}

	if !a.Labels().Equal(*b.Labels()) || !a.Annotations().Equal(*b.Annotations()) {
		return false
	}

	return sameSpec(old, next)
}

func specBytes(r resource.Resource) ([]byte, error) {
	p, err := protobuf.FromResource(r)
	if err != nil {
		return nil, err
	}

	m, err := p.Marshal()
	if err != nil {
		return nil, err
	}

	return m.GetSpec().GetProtoSpec(), nil
}

func sameSpec(a, b resource.Resource) bool {
	x, errA := specBytes(a)
	y, errB := specBytes(b)

	return errA == nil && errB == nil && bytes.Equal(x, y)
}

// Omni validates MachineRequests: a parseable Talos version on create, and the spec never changes.
func validateCreate(r resource.Resource) error {
	req, ok := r.(*infra.MachineRequest)
	if !ok {
		return nil
	}

	version := req.TypedSpec().Value.GetTalosVersion()
	if _, err := semver.ParseTolerant(version); err != nil {
		return status.Errorf(codes.InvalidArgument, "failed to validate: 1 error occurred:\n\t* invalid talos version format: %q\n\n", version)
	}

	return nil
}

func validateUpdate(old, next resource.Resource) error {
	if _, ok := next.(*infra.MachineRequest); !ok {
		return nil
	}

	if !sameSpec(old, next) {
		return status.Error(codes.InvalidArgument, "failed to validate: machine request spec is immutable")
	}

	return nil
}
