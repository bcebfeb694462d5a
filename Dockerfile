# pyramid as a container: a static binary on distroless, running as non-root.
#   docker build -t pyramid .
#   docker run -p 9201:9201 -e PYRAMID_CLICKHOUSE_ADDR=clickhouse:9000 pyramid

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not invalidate the module download layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/pyramid ./cmd/pyramid

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/pyramid /pyramid
# Listen on all interfaces: inside a container, loopback is unreachable from outside.
ENV PYRAMID_LISTEN_ADDR=0.0.0.0:9201
EXPOSE 9201
# The :nonroot image already runs as 65532; stated here so it survives a base image change.
USER 65532:65532
ENTRYPOINT ["/pyramid"]
