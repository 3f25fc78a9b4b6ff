# The two commands in the README: `make dev` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
export PATH := $(CURDIR)/node_modules/.bin:$(PATH)

.PHONY: dev test bootstrap abi lint test-contracts test-rust fmt

## Start anvil + redis-server, deploy and seed the contracts, run the node.
dev: bootstrap
	cargo run --quiet --bin chainfront -- dev

## Install what is missing, then run every check and test.
test: bootstrap lint test-contracts test-rust

bootstrap:
	@scripts/bootstrap

lint:
	forge fmt --check
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

test-contracts:
	forge test
	scripts/gen-abi --check

test-rust:
	cargo test --workspace

## Regenerate abi/ from contracts/ (commit the result).
abi:
	scripts/gen-abi

## Format Rust and Solidity in place.
fmt:
	cargo fmt --all
	forge fmt
