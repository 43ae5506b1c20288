//! The registry's commands on a node's control socket: what `peerlink
//! publish`, `search`, `install` and `info` send to a running node.
//!
//! Each is a JSON object tagged by `"op"` ([`RegistryCommand`]); the node
//! answers with the matching report. An install streams
//! [`crate::Progress`] lines while it fetches.

use std::path::PathBuf;

use peerlink_net::control::{ControlExtension, ExtensionReply};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::Registry;

/// One registry command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum RegistryCommand {
    /// Publish the package in directory `dir` (absolute).
    RegistryPublish {
        dir: PathBuf,
    },
    RegistrySearch {
        query: String,
        #[serde(default)]
        remote: bool,
        #[serde(default = "default_limit")]
        limit: usize,
    },
    /// Install `spec` (`NAME` or `NAME@REQ`) into `to` (absolute).
    RegistryInstall {
        spec: String,
        to: PathBuf,
    },
    RegistryInfo {
        name: String,
    },
    RegistryStats,
}

fn default_limit() -> usize {
    10
}

impl RegistryCommand {
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

fn to_value<T: Serialize, E: std::fmt::Display>(r: Result<T, E>) -> Result<Value, String> {
    r.map_err(|e| e.to_string())
        .and_then(|v| serde_json::to_value(v).map_err(|e| e.to_string()))
}

impl ControlExtension for Registry {
    fn handle(
        &self,
        op: &str,
        request: Value,
        progress: mpsc::UnboundedSender<Value>,
    ) -> Option<ExtensionReply> {
        if !op.starts_with("registry_") {
            return None;
        }
        let registry = self.clone();
        Some(Box::pin(async move {
            let cmd: RegistryCommand =
                serde_json::from_value(request).map_err(|e| format!("malformed command: {e}"))?;
            match cmd {
                RegistryCommand::RegistryPublish { dir } => to_value(registry.publish(&dir).await),
                RegistryCommand::RegistrySearch {
                    query,
                    remote,
                    limit,
                } => to_value(registry.search(&query, limit, remote).await),
                RegistryCommand::RegistryInstall { spec, to } => {
                    let (tx, mut rx) = mpsc::unbounded_channel();
                    let forward = tokio::spawn(async move {
                        while let Some(p) = rx.recv().await {
                            let _ = progress.send(serde_json::to_value(p).unwrap_or(Value::Null));
                        }
                    });
                    let report = registry.install(&spec, &to, Some(tx)).await;
                    let _ = forward.await;
                    to_value(report)
                }
                RegistryCommand::RegistryInfo { name } => match registry.info(&name).await {
                    Ok(Some(info)) => to_value(Ok::<_, String>(info)),
                    Ok(None) => Err(format!(
                        "no package named {name} is known to this node or the network"
                    )),
                    Err(e) => Err(e.to_string()),
                },
                RegistryCommand::RegistryStats => to_value(Ok::<_, String>(registry.stats())),
            }
        }))
    }
}
