//! Backups: `taurus cluster snapshot save|inspect` and `taurus master restore`
//! (docs/operations-backup.md; file format in `taurus_store::backup`).

use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use serde::Serialize;
use taurus_store::backup::BackupCounts;
use taurus_store::backup::BackupHeader;

use crate::Context;
use crate::args::MasterRestoreArgs;
use crate::args::SnapshotCmd;
use crate::output::print_json;
use crate::output::time_ms;

pub async fn run(cmd: SnapshotCmd, ctx: &Context) -> anyhow::Result<ExitCode> {
    match cmd {
        SnapshotCmd::Save { file, force } => save(ctx, &file, force).await,
        SnapshotCmd::Inspect { file } => inspect(ctx, &file),
    }
}

/// What `save` and `inspect` print in JSON.
#[derive(Debug, Serialize)]
pub struct BackupView {
    pub file: PathBuf,
    pub bytes: u64,
    pub sha256: String,
    pub format: u32,
    pub schema: u32,
    pub last_log_index: u64,
    /// Term of the leader of the last log entry.
    pub last_log_term: u64,
    pub term: u64,
    pub taken_by: u64,
    pub created_at_ms: u64,
    pub members: Vec<String>,
    #[serde(flatten)]
    pub counts: BackupCounts,
}

impl BackupView {
    fn new(file: &Path, bytes: u64, sha256: String, h: &BackupHeader, counts: BackupCounts) -> Self {
        BackupView {
            file: file.to_path_buf(),
            bytes,
            sha256,
            format: h.format,
            schema: h.schema,
            last_log_index: h.last_log_id.index,
            last_log_term: h.last_log_id.leader_id.term,
            term: h.term,
            taken_by: h.taken_by,
            created_at_ms: h.created_at_ms,
            members: h.members.iter().map(|(id, a)| format!("{id}={a}")).collect(),
            counts,
        }
    }

    fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            return print_json(self);
        }
        println!("file:       {}", self.file.display());
        println!("size:       {} bytes", self.bytes);
        println!("sha256:     {}", self.sha256);
        println!(
            "log index:  {} (entry of term {}; master {} in term {})",
            self.last_log_index, self.last_log_term, self.taken_by, self.term
        );
        println!("taken at:   {}", time_ms(self.created_at_ms));
        println!("members:    {}", self.members.join(","));
        let by_state: Vec<String> = self
            .counts
            .tasks_by_state
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        println!(
            "tasks:      {}{}",
            self.counts.tasks,
            if by_state.is_empty() {
                String::new()
            } else {
                format!(" ({})", by_state.join(", "))
            }
        );
        println!("agents:     {}", self.counts.agents);
        println!("tokens:     {}", self.counts.tokens);
        Ok(())
    }
}

/// `FILE.tmp` beside `FILE`.
fn tmp_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    file.with_file_name(name)
}

/// Streams a backup into `FILE.tmp`, syncs it, checks it, renames it to `file`.
async fn save(ctx: &Context, file: &Path, force: bool) -> anyhow::Result<ExitCode> {
    if file.file_name().is_none() {
        anyhow::bail!("FILE: {} names no file", file.display());
    }
    if file.exists() && !force {
        anyhow::bail!("FILE: {} exists; pass --force to replace it", file.display());
    }
    let tmp = tmp_path(file);
    let result = save_to(ctx, &tmp).await;
    let (expected_sha, master) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let verified = std::fs::File::open(&tmp)
        .map_err(anyhow::Error::from)
        .and_then(|f| Ok(taurus_store::backup::verify_stream(std::io::BufReader::new(f))?));
    let verified = match verified {
        Ok(v) if v.sha256 == expected_sha => v,
        Ok(v) => {
            let _ = std::fs::remove_file(&tmp);
            anyhow::bail!(
                "the file written has sha256 {} but master {master} sent {expected_sha}",
                v.sha256
            );
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.context(format!("the backup from {master} does not check out")));
        }
    };
    std::fs::rename(&tmp, file)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), file.display()))?;
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync the directory {}", dir.display()))?;
    let counts = verified.header.counts.clone();
    let view = BackupView::new(file, verified.bytes, verified.sha256, &verified.header, counts);
    if !ctx.json {
        println!("saved a backup from {master}");
    }
    view.print(ctx.json)?;
    Ok(ExitCode::SUCCESS)
}

/// Writes the stream to `tmp` and syncs it; returns the checksum the master announced and the
/// master's address.
async fn save_to(ctx: &Context, tmp: &Path) -> anyhow::Result<(String, String)> {
    let client = ctx.client()?;
    let (mut stream, master) = client.save_snapshot().await?;
    let f = std::fs::File::create(tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut out = std::io::BufWriter::new(f);
    let (mut total, mut sha256, mut written) = (None, String::new(), 0u64);
    loop {
        match stream.message().await {
            Ok(Some(chunk)) => {
                if total.is_none() {
                    total = Some(chunk.total_bytes);
                    sha256 = chunk.sha256;
                }
                out.write_all(&chunk.data)
                    .with_context(|| format!("cannot write {}", tmp.display()))?;
                written += chunk.data.len() as u64;
            }
            Ok(None) => break,
            Err(s) => anyhow::bail!(
                "the backup stream from {master} broke after {written} bytes: {}: {}",
                s.code(),
                s.message()
            ),
        }
    }
    if total != Some(written) {
        anyhow::bail!(
            "the backup stream from {master} ended after {written} of {} bytes",
            total.unwrap_or(0)
        );
    }
    let f = out
        .into_inner()
        .map_err(|e| anyhow::anyhow!("cannot write {}: {}", tmp.display(), e.error()))?;
    f.sync_all()
        .with_context(|| format!("cannot sync {}", tmp.display()))?;
    Ok((sha256, master))
}

/// Verifies `file` and loads its state; prints the header and what the state holds.
fn inspect(ctx: &Context, file: &Path) -> anyhow::Result<ExitCode> {
    let backup = taurus_store::backup::load_backup(file)?;
    let counts = BackupCounts::of(&backup.state);
    let view = BackupView::new(file, backup.bytes, backup.sha256.clone(), &backup.header, counts);
    view.print(ctx.json)?;
    Ok(ExitCode::SUCCESS)
}

/// `taurus master restore`: seeds the configured data dir from a backup.
pub async fn restore(args: MasterRestoreArgs) -> anyhow::Result<ExitCode> {
    let snapshot = args.snapshot;
    let config = crate::master::resolve_config(args.master)?;
    if config.peers.is_empty() {
        anyhow::bail!(
            "peers: restore needs every master of the new cluster (--peers 1=HOST:PORT,...), the \
             same for each master restored"
        );
    }
    let backup = taurus_store::backup::load_backup(&snapshot)?;
    let seeded =
        taurus_store::backup::seed_data_dir(&config.data_dir, &backup, config.id, &config.peers).await?;
    println!(
        "restored {} (log index {}, sha256 {}) into {} as master {} of {}",
        snapshot.display(),
        backup.header.last_log_id.index,
        backup.sha256,
        config.data_dir.display(),
        config.id,
        config
            .peers
            .iter()
            .map(|(id, a)| format!("{id}={a}"))
            .collect::<Vec<_>>()
            .join(","),
    );
    println!(
        "tasks: {}; agents declared down: {}; attempts lost and requeued: {}; failed (no attempt left): {}",
        backup.state.len(),
        seeded.restored.agents_down.len(),
        seeded.restored.requeued.len(),
        seeded.restored.failed.len(),
    );
    println!(
        "the new cluster's log continues after index {} (term above {})",
        seeded.last_log_id.index, seeded.vote_term
    );
    println!("start this master with `taurus master start` and the same settings");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmp_is_beside_the_file() {
        assert_eq!(tmp_path(Path::new("/b/x.bak")), PathBuf::from("/b/x.bak.tmp"));
        assert_eq!(tmp_path(Path::new("x")), PathBuf::from("x.tmp"));
    }
}
