# syntax=docker/dockerfile:1
# The couponrush image: `serve`, `worker`, `migrate`, `reconcile`, `events`, `token`. The bench is
# a tool beside the service (the bench/ workspace of a checkout), not in the image.
# Build stage: the service's compile steps of `npm run build`. Runtime stage: production
# dependencies only (--workspaces=false: none of the bench's), no compiler, non-root.
# test/deploy-image.test.ts replays the runtime stage's steps on the host and runs the result.
ARG NODE_VERSION=20

FROM node:${NODE_VERSION}-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY src ./src
# The console's front end, bundled by scripts/build-console.mjs into dist/public/console.
COPY console ./console
COPY scripts/build-console.mjs ./scripts/
RUN npm ci --workspaces=false --ignore-scripts --no-audit --no-fund \
  && npx tsc -p tsconfig.build.json && node scripts/build-console.mjs

FROM node:${NODE_VERSION}-bookworm-slim AS runtime
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` runs tsc, which is a dev dependency and not needed here (dist/ is copied).
RUN npm ci --omit=dev --workspaces=false --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY bin ./bin
COPY migrations ./migrations
COPY lua ./lua
# The base image's unprivileged user; nothing under /app is writable by it.
USER node
EXPOSE 3000 9091
# Liveness only: readiness (database, Redis) is /readyz, for the load balancer.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["node", "bin/couponrush.js"]
CMD ["serve"]
