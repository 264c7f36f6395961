# consumer-host: a small image that runs `consumer-host run`, which runs $CONSUMER_HOST_APP.
# Build your own on top of it (COPY your app, set CONSUMER_HOST_APP), or build from this repo;
# without CONSUMER_HOST_APP it runs the bundled example (its demo producer off: EXAMPLE_PRODUCER).
# It runs as USER 10001: an image built on it (FROM consumer-host) needs USER root to install,
# then USER 10001 again; README ("Heroku", the Dockerfile paragraph) shows the pattern.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY consumer_host ./consumer_host
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CONSUMER_HOST_HEALTH_PORT=8080 \
    CONSUMER_HOST_LOG_FORMAT=json \
    CONSUMER_HOST_APP=examples/orders.py
COPY --from=build /install /usr/local
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --create-home app
WORKDIR /app
COPY --chown=app:app examples ./examples
USER 10001
EXPOSE 8080
ENTRYPOINT ["consumer-host"]
CMD ["run"]
