# The controller image: `meshctl serve` in the cluster and `meshctl capture` in every meshed pod's init container.
# Build: docker build -t meshctl:dev .   (no Docker engine on the CI machines: this file is not built in CI)
FROM python:3.11-slim-bookworm

# iptables for `meshctl capture` (nf_tables backend, as the kernels of current EKS AMIs and kind use).
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.lock ./
RUN pip install --no-cache-dir --disable-pip-version-check -r requirements.lock
COPY pyproject.toml README.md ./
COPY meshctl/ meshctl/
COPY deploy/ deploy/
RUN pip install --no-cache-dir --disable-pip-version-check --no-deps . \
 && python -c "import meshctl.cli.main"
ENV MESHCTL_DEPLOY_DIR=/app/deploy PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1

# Non-root for the controller (the Deployment also sets it); the capture init container overrides to root.
USER 65532:65532
ENTRYPOINT ["meshctl"]
CMD ["serve", "--kubernetes"]
