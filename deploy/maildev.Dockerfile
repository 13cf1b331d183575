# syntax=docker/dockerfile:1
#
# MailDev for compose.yaml: the same npm package and version as `make run`
# (deploy/local/maildev.sh), so the two mailboxes behave alike (REST API under
# /api/email, the same options). deploy/maildev.version is the one place that
# pins the version. Built with deploy/ as the context:
#
#   docker build -f deploy/maildev.Dockerfile -t latchkey-maildev:local deploy

# maildev 3 needs Node.js 20 or later.
FROM node:22-alpine
COPY maildev.version /maildev.version
RUN npm install --global --no-audit --no-fund --loglevel=error "maildev@$(tr -d '[:space:]' </maildev.version)" \
    && npm cache clean --force
USER node
EXPOSE 1025 1080
# In the container it listens on every interface of its own network: the
# ports compose publishes are bound to the host's loopback only.
ENTRYPOINT ["maildev", "--smtp", "1025", "--web", "1080"]
