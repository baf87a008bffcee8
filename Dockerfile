# pneumo web app + REST API, CPU only.
#   docker build -t pneumo .
#   docker run --rm -p 8000:8000 -v pneumo-audit:/data pneumo           # serves the shipped model (models/default)
#   docker run --rm -p 8000:8000 -v $PWD/runs/my-model:/model:ro pneumo pneumo serve /model --host 0.0.0.0
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PNEUMO_MODEL=/app/models/default

WORKDIR /app

# CPU-only torch first, from the PyTorch CPU index, so pip never pulls the CUDA build.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"

# Dependencies from pyproject.toml alone, before the source: a code edit rebuilds only the layers below.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt

COPY README.md ./
COPY src ./src
RUN pip install --no-deps . && python -c "import pneumo.server, pneumo.cli.serve"

# The shipped model (pneumo.json, model.safetensors, optional model.onnx / ood.safetensors).
COPY models/default ./models/default

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin pneumo \
    && mkdir -p /data && chown pneumo:pneumo /data
USER pneumo
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/api/v1/health', timeout=4).status == 200 else 1)"

CMD ["pneumo", "serve", "--host", "0.0.0.0", "--port", "8000", "--audit-db", "/data/pneumo-audit.sqlite"]
