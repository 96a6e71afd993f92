//! The audit trail: recording, verifying and pruning.

use super::*;

impl Store {
    /// Appends a record to the processing record (verification and identification decisions,
    /// config changes, authentication failures, ...).
    pub fn record(&mut self, event: AuditEvent) -> Result<u64, StoreError> {
        self.write("append audit record", |tx, ctx| ctx.audit(tx, &event))
    }

    /// Walks the whole audit chain and reports the first break (edited, removed, reordered,
    /// truncated) if any.
    pub fn verify_audit(&self) -> Result<AuditVerification, StoreError> {
        let head = self.head_file.read()?;
        let outside = match &head {
            Some(h) => audit::OutsideHead::Present {
                seq: h.seq,
                mac: &h.mac,
                tag: &h.tag,
            },
            None if self.head_kept || self.head_file.exists() => audit::OutsideHead::Missing,
            None => audit::OutsideHead::NotKept,
        };
        audit::verify(&self.conn, &self.file, &self.audit_key, outside)
    }

    /// Audit records with their chain links (for an export that can be checked later).
    pub fn audit_export(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<audit::ChainedRecord>, StoreError> {
        audit::chained_records(&self.conn, &self.file, from, limit)
    }

    /// Checks an exported run of records with this store's audit key: every MAC, every link,
    /// consecutive numbers. `None` when the export holds.
    pub fn verify_export(&self, records: &[audit::ChainedRecord]) -> Option<AuditBreak> {
        audit::verify_chained(&self.audit_key, records)
    }

    /// The file that keeps the audit head outside the database.
    pub fn audit_head_file(&self) -> &Path {
        self.head_file.path()
    }

    /// Removes the longest prefix of audit records older than `older_than` and re-anchors the
    /// chain, recording the prune itself. Refuses cut-offs younger than 3 years (Art. 9) and a
    /// broken chain (the evidence stays).
    pub fn prune_audit(
        &mut self,
        older_than: UnixMillis,
        operator: &str,
    ) -> Result<PruneReport, StoreError> {
        let report = self.write("prune audit", |tx, ctx| {
            let report = audit::prune_prefix(tx, ctx.file, ctx.audit, ctx.now, older_than)?;
            if report.removed > 0 {
                ctx.audit(
                    tx,
                    &AuditEvent::new(AuditKind::AuditPrune, operator, "ok").details(json!({
                        "removed": report.removed,
                        "anchor_seq": report.anchor_seq,
                        "older_than": older_than.0,
                    })),
                )?;
            }
            Ok(report)
        })?;
        if report.removed > 0 {
            let _ = self.checkpoint();
        }
        Ok(report)
    }

    /// Audit records with `seq >= from`, at most `limit`.
    pub fn audit_records(&self, from: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        audit::records(&self.conn, &self.file, from, limit)
    }

    /// Number of audit records per kind.
    pub fn audit_counts(&self) -> Result<std::collections::HashMap<String, u64>, StoreError> {
        audit::counts_by_kind(&self.conn, &self.file)
    }
}
