//! The `dir` producer: one file per event, written atomically (a hidden temporary file,
//! flushed, renamed into place).

use std::io;
use std::path::PathBuf;

use async_trait::async_trait;
use roundtrip_core::model::DirChannel;
use tokio::io::AsyncWriteExt;

use crate::transport::dir::{PathError, resolve};
use crate::transport::{DriverContext, Outgoing, ProduceError, Producer, Receipt};

/// Writes each event as a file into a directory.
#[derive(Debug)]
pub struct DirProducer {
    channel: String,
    dir: PathBuf,
}

impl DirProducer {
    /// A producer for `channel`, writing into its `path` (relative to the suite file).
    pub fn new(channel: &str, spec: &DirChannel, ctx: &DriverContext) -> DirProducer {
        DirProducer {
            channel: channel.to_owned(),
            dir: resolve(&ctx.base_dir, &spec.path),
        }
    }

    fn unreachable(&self, what: &'static str, path: PathBuf, source: io::Error) -> ProduceError {
        ProduceError::Unreachable {
            channel: self.channel.clone(),
            source: Box::new(PathError { what, path, source }),
        }
    }
}

/// Why `name` cannot be a file name in the channel's directory, if it cannot.
fn check_file_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the file name is empty".to_owned());
    }
    if name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        return Err(format!(
            "the file name `{name}` is not a plain name (no `/`, `\\`, `.` or `..`)"
        ));
    }
    Ok(())
}

#[async_trait]
impl Producer for DirProducer {
    async fn send(&self, message: Outgoing) -> Result<Receipt, ProduceError> {
        let name = message
            .key
            .unwrap_or_else(|| format!("{}.json", message.correlation_id));
        check_file_name(&name).map_err(|m| ProduceError::Rejected {
            channel: self.channel.clone(),
            message: m,
        })?;
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| self.unreachable("create the directory", self.dir.clone(), e))?;
        let target = self.dir.join(&name);
        let tmp = self
            .dir
            .join(format!(".{name}.tmp-{}", uuid::Uuid::new_v4().simple()));
        let written = async {
            let mut file = tokio::fs::File::create(&tmp).await?;
            file.write_all(&message.body).await?;
            file.sync_all().await
        }
        .await;
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(self.unreachable("write", tmp, e));
        }
        if let Err(e) = tokio::fs::rename(&tmp, &target).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(self.unreachable("rename a temporary file to", target, e));
        }
        Ok(Receipt {
            detail: Some(target.display().to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_must_be_plain() {
        assert!(check_file_name("a.json").is_ok());
        assert!(check_file_name("").is_err());
        assert!(check_file_name("..").is_err());
        assert!(check_file_name("a/b.json").is_err());
    }
}
