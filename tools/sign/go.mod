module github.com/coworkhq/cowork/tools/sign

go 1.26.0

require (
	github.com/anchore/go-macholibre v0.0.0-20250826193721-3cd206ca93aa
	github.com/anchore/quill v0.7.1
)

require (
	github.com/anchore/go-logger v0.0.0-20251106021608-a5b0513fa9a9 // indirect
	github.com/github/smimesign v0.2.0 // indirect
	github.com/go-restruct/restruct v1.2.0-alpha // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/pkg/errors v0.9.1 // indirect
	github.com/scylladb/go-set v1.0.3-0.20200225121959-cc7b2070d91e // indirect
	golang.org/x/crypto v0.46.0 // indirect
	software.sslmate.com/src/go-pkcs12 v0.7.0 // indirect
)
