# tqueues dispatcher image. A worker runs from the same image:
#   docker run --no-healthcheck --entrypoint tqueues_worker tqueues --endpoint_url ... (the
#   HEALTHCHECK below probes a dispatcher).
FROM python:3.11-slim

# A numeric user, so the host and Kubernetes (runAsNonRoot) can tell it is not root.
RUN useradd --create-home --uid 10001 tqueues
WORKDIR /app
COPY pyproject.toml setup.py README.rst LICENSE ./
COPY tqueues ./tqueues
# The dispatcher (embedded SQLite store) and the RethinkDB store; workers need no more.
RUN pip install --no-cache-dir './[server,rethinkdb]' && mkdir /data && chown 10001:10001 /data

USER 10001:10001
VOLUME ["/data"]
EXPOSE 8080
# Healthy while GET /health answers 200 (the store answers). The dispatcher here has a
# token, which /health needs too: the probe presents the one the environment gives
# (TQUEUES_TOKEN, else the worker's or producer's; a token given only as an option or a
# file is not seen). The slim image has no curl: Python's urllib probes (no answer or a
# non-2xx one exits non-zero). Set TQUEUES_HEALTH_URL when CMD listens elsewhere.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; e = os.environ; t = e.get('TQUEUES_TOKEN') or e.get('TQUEUES_WORKER_TOKEN') or e.get('TQUEUES_PRODUCER_TOKEN'); r.urlopen(r.Request(e.get('TQUEUES_HEALTH_URL', 'http://127.0.0.1:8080/health'), headers={'Authorization': 'Bearer ' + t} if t else {}), timeout=4)"]
# Inside a container the dispatcher listens beyond loopback, so it needs a token:
#   docker run -e TQUEUES_TOKEN=$(openssl rand -hex 24) -p 127.0.0.1:8080:8080 tqueues
ENTRYPOINT ["tqueues_dispatcher"]
CMD ["--listen", "0.0.0.0:8080", "--data", "/data"]
