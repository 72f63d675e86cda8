//! Cross-service tests live in `tests/`: they start the real `ingest-api`, `batch-worker`,
//! `stats-api` and `sse-gateway` binaries (built by `cargo build --bins`, which `make test`
//! runs first) against real Redis and PostgreSQL, and break things for real: `kill -9` of
//! workers mid-batch, PostgreSQL cut off behind a TCP proxy.
