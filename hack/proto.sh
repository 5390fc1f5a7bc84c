#!/bin/sh
# Regenerates the gRPC code from the .proto files, reproducibly: protoc comes
# from Debian's protobuf-compiler and the Go plugins from go.mod's tool directive.
set -eu
cd "$(dirname "$0")/.."
command -v protoc >/dev/null 2>&1 || ./hack/deps.sh protobuf-compiler
go build -o bin/tools/ google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc
for proto in guestagent/agentpb/agent.proto; do
	protoc -I "$(dirname "$proto")" \
		--plugin=protoc-gen-go=bin/tools/protoc-gen-go \
		--plugin=protoc-gen-go-grpc=bin/tools/protoc-gen-go-grpc \
		--go_out="$(dirname "$proto")" --go_opt=paths=source_relative \
		--go-grpc_out="$(dirname "$proto")" --go-grpc_opt=paths=source_relative \
		"$proto"
done
