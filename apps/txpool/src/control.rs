//! The pool's commands on a node's control socket: what `peerlink tx
//! submit | nonce | pool | show` send to a running node.
//!
//! Each is a JSON object tagged by `"op"` ([`TxCommand`]). Byte strings
//! (a signed transaction, a payload) travel as hex, checked for length
//! before they are decoded.

use std::sync::Weak;

use peerlink_net::control::{ControlExtension, ExtensionReply};
use peerlink_net::PeerId;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::pool::Placed;
use crate::service::{Inner, Located};
use crate::tx::{Transaction, TxId, MAX_ENCODED, MAX_PAYLOAD};

/// Transactions `tx_pool` lists, at most.
pub const MAX_LISTED: usize = 1000;

/// One txpool command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum TxCommand {
    /// Submit `tx` (hex of a signed encoding), or else build one from
    /// `payload` (hex), `fee_rate` and `nonce` and sign it with the
    /// node's key (the nonce defaults to the node's next free one).
    TxSubmit {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tx: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payload: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fee_rate: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<u64>,
    },
    /// The nonce `sender`'s next transaction should carry.
    TxNonce { sender: String },
    /// Counts, height, and the best `best` executable transactions.
    TxPool {
        #[serde(default = "default_best")]
        best: usize,
    },
    /// One transaction by id: where it is and what it is.
    TxShow { id: String },
}

fn default_best() -> usize {
    10
}

impl TxCommand {
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Decodes hex of at most `max` bytes, checking the length first.
fn unhex(what: &str, s: &str, max: usize) -> Result<Vec<u8>, String> {
    if s.len() > 2 * max {
        return Err(format!("{what} is over {max} bytes"));
    }
    hex::decode(s).map_err(|e| format!("{what} is not hex: {e}"))
}

fn summary(t: &Transaction) -> Value {
    json!({
        "id": t.id().to_string(),
        "sender": t.sender.to_string(),
        "nonce": t.nonce,
        "fee_rate": t.fee_rate,
        "size": t.size(),
    })
}

/// The control extension of one pool (it does not keep the pool alive).
pub(crate) struct TxControl {
    inner: Weak<Inner>,
}

impl TxControl {
    pub(crate) fn new(inner: Weak<Inner>) -> TxControl {
        TxControl { inner }
    }
}

fn run(inner: &Inner, cmd: TxCommand) -> Result<Value, String> {
    match cmd {
        TxCommand::TxSubmit {
            tx,
            payload,
            fee_rate,
            nonce,
        } => {
            let tx = match tx {
                Some(hex) => {
                    if payload.is_some() || fee_rate.is_some() || nonce.is_some() {
                        return Err("give either a signed tx or payload/fee_rate/nonce".into());
                    }
                    let bytes = unhex("tx", &hex, MAX_ENCODED)?;
                    Transaction::decode(&bytes).map_err(|e| format!("tx: {e}"))?
                }
                None => {
                    let payload = unhex("payload", payload.as_deref().unwrap_or(""), MAX_PAYLOAD)?;
                    let key = inner.node.keypair();
                    let nonce = nonce.unwrap_or_else(|| inner.next_nonce(&key.peer_id()));
                    let fee_rate = fee_rate.unwrap_or(inner.config.pool.min_fee_rate.max(1));
                    Transaction::sign(key, nonce, fee_rate, payload).map_err(|e| e.to_string())?
                }
            };
            let placed = inner.submit(tx.clone()).map_err(|e| e.to_string())?;
            let mut v = summary(&tx);
            v["placed"] = json!(match placed {
                Placed::Pending => "pending",
                Placed::Queued => "queued",
            });
            Ok(v)
        }
        TxCommand::TxNonce { sender } => {
            let sender: PeerId = sender
                .parse()
                .map_err(|_| format!("{sender:?} is not a peer id"))?;
            Ok(json!({ "sender": sender.to_string(), "nonce": inner.next_nonce(&sender) }))
        }
        TxCommand::TxPool { best } => {
            let st = inner.status();
            let best: Vec<Value> = inner
                .best(best.min(MAX_LISTED))
                .iter()
                .map(summary)
                .collect();
            Ok(json!({
                "pending": st.pool.pending,
                "queued": st.pool.queued,
                "bytes": st.pool.bytes,
                "senders": st.pool.senders,
                "height": st.height,
                "wanted": st.wanted,
                "held_blocks": st.held_blocks,
                "equivocations": st.equivocations,
                "best": best,
            }))
        }
        TxCommand::TxShow { id } => {
            let id: TxId = id.parse().map_err(|e| format!("{id:?}: {e}"))?;
            let located = inner
                .locate(&id)
                .ok_or_else(|| format!("{id} is not in this node's pool or its recent blocks"))?;
            let mut v = match inner.get(&id) {
                Some(t) => {
                    let mut v = summary(&t);
                    v["payload"] = json!(hex::encode(&t.payload));
                    v
                }
                None => json!({ "id": id.to_string() }),
            };
            match located {
                Located::Pending => v["state"] = json!("pending"),
                Located::Queued => v["state"] = json!("queued"),
                Located::Included(h) => {
                    v["state"] = json!("included");
                    v["height"] = json!(h);
                }
            }
            Ok(v)
        }
    }
}

impl ControlExtension for TxControl {
    fn handle(
        &self,
        op: &str,
        request: Value,
        _progress: mpsc::UnboundedSender<Value>,
    ) -> Option<ExtensionReply> {
        if !op.starts_with("tx_") {
            return None;
        }
        let inner = self.inner.clone();
        Some(Box::pin(async move {
            let inner = inner.upgrade().ok_or("the transaction pool has stopped")?;
            let cmd: TxCommand =
                serde_json::from_value(request).map_err(|e| format!("malformed command: {e}"))?;
            let submitted = matches!(cmd, TxCommand::TxSubmit { .. });
            let v = run(&inner, cmd)?;
            if submitted {
                // The user's transaction is answered once it is on disk.
                inner.flush().await.map_err(|e| e.to_string())?;
            }
            Ok(v)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_checked_for_length_before_decoding() {
        let long = "00".repeat(MAX_ENCODED + 1);
        assert!(unhex("tx", &long, MAX_ENCODED)
            .unwrap_err()
            .contains("over"));
        assert!(unhex("tx", "zz", 8).unwrap_err().contains("not hex"));
        assert!(unhex("tx", "abc", 8).is_err());
        assert_eq!(unhex("tx", "0aff", 8).unwrap(), vec![10, 255]);
    }

    #[test]
    fn commands_round_trip_and_unknown_fields_are_refused() {
        let c = TxCommand::TxPool { best: 3 };
        let back: TxCommand = serde_json::from_value(c.to_value()).unwrap();
        assert_eq!(back, c);
        let bad = json!({"op": "tx_show", "id": "00", "extra": 1});
        assert!(serde_json::from_value::<TxCommand>(bad).is_err());
    }
}
