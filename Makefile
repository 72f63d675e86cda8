# Tally: see README.md. Everything runs without Docker; scripts/ find or start Redis and
# PostgreSQL themselves.

.PHONY: up down logs test bench fuzz lint fmt e2e clean

up:          ## build (release) and start the whole stack, print URLs and tokens
	@scripts/up.sh

down:        ## stop what `make up` started
	@scripts/down.sh

logs:        ## follow the logs of the running stack
	@tail -n 50 -F .tally/logs/*.log

test:        ## every test, against real Redis and PostgreSQL
	@scripts/test.sh

bench:       ## throughput and latency; results in bench/results/
	@scripts/bench.sh

fuzz:        ## the abuse suite: schemathesis on every route, hand-made attacks, no 5xx
	@scripts/fuzz.sh

lint:        ## formatting, clippy, and the deployment files
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	@scripts/lint-deploy.sh

fmt:
	cargo fmt --all

clean:
	cargo clean
	rm -rf .tally
