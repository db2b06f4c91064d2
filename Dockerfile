# ALUMIINI controller image: a static Go binary on distroless, running as the
# non-root user 65532 that deploy/deployment.yaml expects. go-git is pure Go,
# so the image needs no git; distroless/static already carries the CA
# certificates for https:// remotes.
#
#   docker build -t alumiini:dev --build-arg VERSION=$(git describe --tags --always --dirty) .

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src

# Dependencies first, so editing the source does not download them again.
COPY go.mod go.sum ./
RUN go mod download

COPY . .
# Set by BuildKit to the platform being built for; cross-compiling from the
# build platform is faster than emulating the target.
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
    -o /out/alumiini ./cmd/alumiini

FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/alumiini /alumiini
USER 65532:65532
ENTRYPOINT ["/alumiini"]
