# make verify: the checks that need no privileges and no network namespaces
# (scripts/test.sh runs it before the tests). make release: scripts/release.sh.
GOLANGCI_LINT_VERSION := v2.15.0
GOBIN := $(shell go env GOPATH)/bin
GOLANGCI_LINT := $(GOBIN)/golangci-lint

.PHONY: verify fmt vet lint tidy imports release lint-install

verify: fmt vet cross tidy imports lint

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt: these files need gofmt -w:"; echo "$$out"; exit 1; fi

vet:
	go vet ./...

# The CLI is released for darwin and windows too (scripts/release.sh):
# build it for Windows (the OS least like Linux) so an OS-specific call
# cannot break the release. Cached after the first run.
cross:
	CGO_ENABLED=0 GOOS=windows GOARCH=amd64 go build -o /dev/null ./cmd/jitgate/

tidy:
	go mod tidy -diff

imports:
	go test -count=1 ./internal/archtest/

# Installs the pinned golangci-lint from the module proxy into GOPATH/bin
# once (kept there between runs), then lints.
lint-install:
	@if ! "$(GOLANGCI_LINT)" version 2>/dev/null | grep -q "version $(GOLANGCI_LINT_VERSION:v%=%)"; then \
		echo "installing golangci-lint $(GOLANGCI_LINT_VERSION)"; \
		go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION); \
	fi

lint: lint-install
	"$(GOLANGCI_LINT)" run ./...

release:
	scripts/release.sh $(VERSION)
