# tqueues dispatcher image; run a worker from the same image with `tqueues_worker ...`.
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
# /health answers 200 without a token while the store answers. The slim image has no curl:
# Python's urllib probes it (a non-2xx answer or no answer exits non-zero). Change the port
# here too if CMD listens on another.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)"]
# Inside a container the dispatcher listens beyond loopback, so it needs a token:
#   docker run -e TQUEUES_TOKEN=$(openssl rand -hex 24) -p 127.0.0.1:8080:8080 tqueues
ENTRYPOINT ["tqueues_dispatcher"]
CMD ["--listen", "0.0.0.0:8080", "--data", "/data"]
