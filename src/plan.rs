//! Pure planning rules. This placeholder holds only the configuration rule
//! check that `config` calls; the full module replaces it.

/// Check the configuration rules of SPEC.md: `batch_size > 0`, and
/// `snapshot_interval` (0 when snapshots are off) a multiple of `batch_size`,
/// so that every snapshot falls on a position where a batch ends. The error
/// says which rule failed and why it exists.
pub fn check_rules(batch_size: u64, snapshot_interval: u64) -> Result<(), String> {
    if batch_size == 0 {
        return Err("batch_size must be greater than 0: a batch holds at least one segment".into());
    }
    if !snapshot_interval.is_multiple_of(batch_size) {
        return Err(format!(
            "snapshot_interval ({snapshot_interval}) must be a multiple of batch_size \
             ({batch_size}): otherwise a snapshot can fall at a position no batch ends on, \
             and a restore from it would have to replay the stream from its beginning"
        ));
    }
    Ok(())
}
