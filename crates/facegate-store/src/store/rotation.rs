//! Master key rotation and the subject-key epoch.

use super::*;

impl Store {
    /// Re-wraps every subject data key and the audit key under `new_key` in one transaction,
    /// without re-enrolling anyone, and records the rotation. Afterwards the database opens only
    /// with `new_key`.
    ///
    /// Why rotate: a byte copy of the database (a backup, a stolen disk image) taken *before* a
    /// subject was deleted still holds that subject's wrapped data key, so the old copy plus the
    /// master key in use at the time can still open the deleted subject's templates. Deleting a
    /// subject crypto-shreds it in the live database (its key row is gone, `secure_delete`
    /// zeroes the freed cells and the WAL is checkpointed and truncated), but it cannot reach
    /// into copies. After a rotation, old copies need the *retired* key: destroy the retired key
    /// (and keep backups sealed under the current one) and every subject deleted before the
    /// rotation is unreadable in every old copy too.
    #[tracing::instrument(skip_all)]
    pub fn rotate_master_key(
        &mut self,
        new_key: &MasterKey,
        operator: &str,
    ) -> Result<RotationReport, StoreError> {
        let new_keks = Keks::derive(new_key);
        let new_id = new_key.id();
        let old_id = self.key_id.clone();
        // The new master key's KEKs under the same epoch.
        let new_keks = match files::read_epoch(&self.state_dir, files::EPOCH_FILE)? {
            Some(e)
                if get_setting(&self.conn, &self.file, SETTING_EPOCH)?.as_deref()
                    == Some(seal::epoch_id(&e).as_str()) =>
            {
                new_keks.for_epoch(&e)
            }
            _ => new_keks,
        };
        let rewrapped = self.write("rotate master key", |tx, ctx| {
            let n = rewrap_all(tx, ctx.file, ctx.keks, &new_keks)?;
            let audit_secret = unwrap_audit_secret(tx, ctx.file, ctx.keks)?;
            store_audit_secret(tx, ctx.file, &new_keks, &audit_secret)?;
            set_setting(tx, ctx.file, SETTING_KEY_ID, new_id.as_str())?;
            ctx.audit(
                tx,
                &AuditEvent::new(AuditKind::KeyRotation, operator, "ok").details(json!({
                    "old_key_id": old_id.as_str(),
                    "new_key_id": new_id.as_str(),
                    "keys_rewrapped": n,
                })),
            )?;
            Ok(n)
        })?;
        self.keks = new_keks;
        self.key_id = new_id.clone();
        let _ = self.checkpoint();
        let created_at = get_setting(&self.conn, &self.file, SETTING_CREATED)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        files::write_marker(
            &self.state_dir,
            &files::Marker {
                key_id: new_id.to_string(),
                created_at,
            },
        )?;
        tracing::info!(old_key_id = %old_id, new_key_id = %new_id, rewrapped, "master key rotated");
        Ok(RotationReport {
            keys_rewrapped: rewrapped,
            old_key_id: old_id,
            new_key_id: new_id,
        })
    }

    /// Replaces the epoch secret the data keys are wrapped under (see `crate::seal`): after a
    /// withdrawal, deletion or expiry, a copy of the database taken before it cannot open the
    /// removed subject's templates, even with the live master key. Records a key rotation.
    pub fn rotate_epoch(&mut self, operator: &str, reason: &str) -> Result<usize, StoreError> {
        let secret = seal::random_secret().map_err(|_| StoreError::Random {
            what: "an epoch secret",
        })?;
        let new_keks = self.keks.for_epoch(&secret);
        let id = seal::epoch_id(&secret);
        files::write_epoch_next(&self.state_dir, &secret)?;
        let result = self.write("rotate epoch", |tx, ctx| {
            let n = rewrap_all(tx, ctx.file, ctx.keks, &new_keks)?;
            set_setting(tx, ctx.file, SETTING_EPOCH, &id)?;
            ctx.audit(
                tx,
                &AuditEvent::new(AuditKind::KeyRotation, operator, "ok").details(json!({
                    "epoch": id,
                    "keys_rewrapped": n,
                    "reason": reason,
                })),
            )?;
            Ok(n)
        });
        let n = match result {
            Ok(n) => n,
            Err(e) => {
                files::discard_epoch_next(&self.state_dir);
                return Err(e);
            }
        };
        // Committed: the new file becomes the epoch (an open completes this if we stop here).
        files::promote_epoch(&self.state_dir)?;
        self.keks = new_keks;
        Ok(n)
    }
}
