# syntax=docker/dockerfile:1
# Container image of the TypeScript Omni infrastructure provider for Proxmox VE.
#
#   docker build -t omni-infra-provider-proxmox:local .
#   docker buildx build --platform linux/amd64,linux/arm64 -t <registry>/omni-infra-provider-proxmox:<tag> --push .
#
# The app is plain JavaScript with no native modules, so the build stages run on the builder's own platform
# ($BUILDPLATFORM, no emulation) and only the final stage is per target architecture.

ARG NODE_IMAGE=node:20-alpine

# --- 1: compile TypeScript to dist/ ---------------------------------------------------------------------------------
FROM --platform=$BUILDPLATFORM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# --- 2: production dependencies only -------------------------------------------------------------------------------
FROM --platform=$BUILDPLATFORM ${NODE_IMAGE} AS prod-deps
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force

# --- 3: runtime ----------------------------------------------------------------------------------------------------
FROM ${NODE_IMAGE}
ENV NODE_ENV=production
WORKDIR /app
COPY --chown=root:root package.json ./
COPY --from=prod-deps --chown=root:root /src/node_modules ./node_modules
COPY --from=build --chown=root:root /src/dist ./dist
COPY --chown=root:root bin ./bin
LABEL org.opencontainers.image.title="omni-infra-provider-proxmox" \
      org.opencontainers.image.description="Omni infrastructure provider for Proxmox VE (TypeScript)" \
      org.opencontainers.image.licenses="MPL-2.0"
# The unprivileged user of the node images (uid 1000); the app writes nothing to disk.
USER node
EXPOSE 8080
# /healthz via Node's own fetch (no curl in the image). Probes :8080, or PROVIDER_HEALTH_LISTEN when that is set.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["node", "dist/ops/probe.js"]
ENTRYPOINT ["node", "dist/main.js"]
