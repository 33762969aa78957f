# syntax=docker/dockerfile:1
# The shop as a container: `docker compose up` runs it beside MongoDB (see compose.yaml).

FROM python:3.13-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /build
# Dependencies in their own layer, rebuilt only when pyproject.toml changes: install them
# with an empty package in place of the code, then the code alone.
COPY pyproject.toml README.md ./
RUN mkdir -p src/shop && touch src/shop/__init__.py \
    && pip install . && pip uninstall --yes shop
COPY src ./src
RUN pip install --no-deps .

FROM python:3.13-slim
RUN useradd --system --uid 10001 --create-home --home-dir /app shop
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SHOP_ENVIRONMENT=production \
    SHOP_HOST=0.0.0.0 \
    SHOP_PORT=8000 \
    SHOP_DATA_DIR=/app/var
WORKDIR /app
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['SHOP_PORT']}/ready\", timeout=2)"]
CMD ["shop", "serve"]
