// The two ManagementService methods a provider calls. CreateSchematicFromRaw validates the schematic strictly with the
// image factory's own model and, like Omni, registers it with the configured image factory (or computes the factory's
// ID locally when none is configured). Omni v1.9 has no GetBootAssetURL: it answers UNIMPLEMENTED, as that release does.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/siderolabs/image-factory/pkg/schematic"
	"github.com/siderolabs/omni/client/api/omni/management"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type managementService struct {
	management.UnimplementedManagementServiceServer

	switches *capabilitySwitches

	mu         sync.Mutex
	factoryURL string
}

func (m *managementService) setFactoryURL(url string) {
	m.mu.Lock()
	m.factoryURL = strings.TrimSuffix(url, "/")
	m.mu.Unlock()
}

func checkManagementRole(ctx context.Context) error {
	c, ok := callerFrom(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "invalid signature")
	}

	switch c.role {
	case "InfraProvider", "Operator", "Admin":
		return nil
	}

	return status.Errorf(codes.PermissionDenied, "unauthorized: role %q is not one of the allowed roles [InfraProvider Operator Admin]", c.role)
}

func (m *managementService) CreateSchematicFromRaw(ctx context.Context, req *management.CreateSchematicFromRawRequest) (*management.CreateSchematicResponse, error) {
	if err := checkManagementRole(ctx); err != nil {
		return nil, err
	}

	parsed, err := schematic.Unmarshal(req.GetRawSchematic())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "failed to parse schematic: %v", err)
	}

	m.mu.Lock()
	factory := m.factoryURL
	m.mu.Unlock()

	if factory == "" {
		id, idErr := parsed.ID()
		if idErr != nil {
			return nil, status.Errorf(codes.Internal, "failed to compute schematic ID: %v", idErr)
		}

		return &management.CreateSchematicResponse{SchematicId: id}, nil
	}

	id, err := registerWithFactory(ctx, factory, req.GetRawSchematic())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "failed to create schematic: %v", err)
	}

	return &management.CreateSchematicResponse{SchematicId: id}, nil
}

func registerWithFactory(ctx context.Context, factory string, body []byte) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()

	httpReq, err := http.NewRequestWithContext(ctx, http.MethodPost, factory+"/schematics", bytes.NewReader(body))
	if err != nil {
		return "", err
	}

	httpReq.Header.Set("Content-Type", "application/yaml")

	resp, err := http.DefaultClient.Do(httpReq)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close() //nolint:errcheck

	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("image factory answered %d", resp.StatusCode)
	}

	var out struct {
		ID string `json:"id"`
	}

	if err = json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return "", err
	}

	return out.ID, nil
}
