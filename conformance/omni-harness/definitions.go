// Seeds meta/ResourceDefinitions from Omni's own resource registry, as Omni does at start-up (IDs are the
// lower-cased type names).
package main

import (
	"context"

	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/siderolabs/omni/client/pkg/omni/resources/registry"
)

func seedDefinitions(ctx context.Context, st state.State) error {
	for _, r := range registry.Resources {
		rd, err := meta.NewResourceDefinition(r.ResourceDefinition())
		if err != nil {
			return err
		}

		if err = st.Create(ctx, rd); err != nil && !state.IsConflictError(err) {
			return err
		}
	}

	return nil
}
