# tqueues dispatcher image; run a worker from the same image with `tqueues_worker ...`.
FROM python:3.11-slim

RUN useradd --create-home --uid 10001 tqueues
WORKDIR /app
COPY pyproject.toml setup.py README.rst ./
COPY tqueues ./tqueues
RUN pip install --no-cache-dir . && mkdir /data && chown tqueues /data

USER tqueues
VOLUME ["/data"]
EXPOSE 8080
# Inside a container the dispatcher listens beyond loopback, so it needs a token:
#   docker run -e TQUEUES_TOKEN=$(openssl rand -hex 24) -p 127.0.0.1:8080:8080 tqueues
ENTRYPOINT ["tqueues_dispatcher"]
CMD ["--listen", "0.0.0.0:8080", "--data", "/data"]
