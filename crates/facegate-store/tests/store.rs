//! Integration tests of facegate-store, compiled as one binary: crypto and tampering, faults
//! (kill -9, read-only, corruption, key files), migrations, the audit chain, and property tests
//! over consent, withdrawal and retention.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "store/audit_trail.rs"]
mod audit_trail;
#[path = "store/common.rs"]
mod common;
#[path = "store/crypto.rs"]
mod crypto;
#[path = "store/enrollment_checks.rs"]
mod enrollment_checks;
#[path = "store/faults.rs"]
mod faults;
#[path = "store/lifecycle.rs"]
mod lifecycle;
#[path = "store/migrations.rs"]
mod migrations;
#[path = "store/properties.rs"]
mod properties;
#[path = "store/records.rs"]
mod records;
#[path = "store/transfer.rs"]
mod transfer;
