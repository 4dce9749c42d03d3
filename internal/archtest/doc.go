// Package archtest holds no code, only a test that keeps the dependency
// direction of docs/design.md: the domain packages import the standard
// library and each other, never an adapter (store, api, nftables, HTTP,
// SQL). `make verify` runs it.
package archtest
