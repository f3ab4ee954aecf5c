//! The advert on the wire, and its authentication. Pure.
//!
//! ```text
//! magic "AGV1" | priority u8 | interval_ms u16 | counter u64 | id_len u8 | id | hmac[32]
//! ```
//! The HMAC-SHA256 (shared key) covers every byte before it. The counter
//! only grows: a sender starts it at its wall clock in microseconds and
//! adds one per advert, so it keeps growing across restarts, and a
//! receiver accepts from each sender only counters above the last it
//! accepted. A forged advert fails the HMAC; a replayed one fails the
//! counter. Both are dropped and counted, never acted on.

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const MAGIC: &[u8; 4] = b"AGV1";
const MAC_LEN: usize = 32;
/// Longest sender id (it goes in one length byte).
pub const MAX_ID_LEN: usize = 64;

/// One advert: "`id` is (or wants to be) master at `priority`";
/// priority 0 means "I am giving the VIP up now".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// The sender's `--id`.
    pub id: String,
    /// 1-254, or 0 for a release.
    pub priority: u8,
    /// The sender's advert interval, in milliseconds (informational).
    pub interval_ms: u16,
    /// Anti-replay counter, strictly increasing per sender.
    pub counter: u64,
}

/// Why an advert was dropped (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Not an advert of ours, truncated, or a bad length.
    Malformed,
    /// The HMAC does not match: wrong key or forged.
    Auth,
    /// A counter not above the last one accepted from that sender.
    Replay,
}

impl Rejected {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Rejected::Malformed => "malformed",
            Rejected::Auth => "auth",
            Rejected::Replay => "replay",
        }
    }
}

/// Seals and opens adverts with the shared key, and remembers the last
/// counter of every sender.
pub struct Codec {
    key: Vec<u8>,
    last: HashMap<String, u64>,
}

impl Codec {
    /// A codec for the shared `key`.
    pub fn new(key: &[u8]) -> Self {
        Codec {
            key: key.to_vec(),
            last: HashMap::new(),
        }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes a key of any length; this never fails.
        HmacSha256::new_from_slice(&self.key).expect("HMAC accepts any key length")
    }

    /// The advert's bytes, authenticated.
    pub fn seal(&self, a: &Advert) -> Vec<u8> {
        let id = &a.id.as_bytes()[..a.id.len().min(MAX_ID_LEN)];
        let mut out = Vec::with_capacity(16 + id.len() + MAC_LEN);
        out.extend_from_slice(MAGIC);
        out.push(a.priority);
        out.extend_from_slice(&a.interval_ms.to_be_bytes());
        out.extend_from_slice(&a.counter.to_be_bytes());
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        let mut mac = self.mac();
        mac.update(&out);
        out.extend_from_slice(&mac.finalize().into_bytes());
        out
    }

    /// Checks and decodes an advert; an accepted one advances its sender's
    /// counter.
    pub fn open(&mut self, bytes: &[u8]) -> Result<Advert, Rejected> {
        let a = self.verify(bytes)?;
        match self.last.get(&a.id) {
            Some(&last) if a.counter <= last => return Err(Rejected::Replay),
            _ => {}
        }
        self.last.insert(a.id.clone(), a.counter);
        Ok(a)
    }

    fn verify(&self, bytes: &[u8]) -> Result<Advert, Rejected> {
        const HEAD: usize = 4 + 1 + 2 + 8 + 1;
        if bytes.len() < HEAD + MAC_LEN || &bytes[..4] != MAGIC {
            return Err(Rejected::Malformed);
        }
        let id_len = bytes[HEAD - 1] as usize;
        if id_len > MAX_ID_LEN || bytes.len() != HEAD + id_len + MAC_LEN {
            return Err(Rejected::Malformed);
        }
        let (body, tag) = bytes.split_at(HEAD + id_len);
        let mut mac = self.mac();
        mac.update(body);
        // Constant-time comparison.
        mac.verify_slice(tag).map_err(|_| Rejected::Auth)?;
        let id = std::str::from_utf8(&body[HEAD..])
            .map_err(|_| Rejected::Malformed)?
            .to_string();
        Ok(Advert {
            id,
            priority: body[4],
            interval_ms: u16::from_be_bytes([body[5], body[6]]),
            counter: u64::from_be_bytes(body[7..15].try_into().expect("8 bytes")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advert(counter: u64) -> Advert {
        Advert {
            id: "machine-a".into(),
            priority: 150,
            interval_ms: 100,
            counter,
        }
    }

    #[test]
    fn a_sealed_advert_opens_to_itself() {
        let mut c = Codec::new(b"secret");
        let bytes = c.seal(&advert(7));
        assert_eq!(c.open(&bytes), Ok(advert(7)));
    }

    #[test]
    fn a_forged_or_tampered_advert_is_refused() {
        let sender = Codec::new(b"secret");
        let mut receiver = Codec::new(b"secret");
        let mut bytes = sender.seal(&advert(1));
        bytes[4] = 254; // raise the priority without the key
        assert_eq!(receiver.open(&bytes), Err(Rejected::Auth));
        let forger = Codec::new(b"guess");
        assert_eq!(receiver.open(&forger.seal(&advert(2))), Err(Rejected::Auth));
        // Nothing forged moved the counter: the real advert 1 still opens.
        assert!(receiver.open(&sender.seal(&advert(1))).is_ok());
    }

    #[test]
    fn a_replayed_or_older_advert_is_refused() {
        let sender = Codec::new(b"k");
        let mut receiver = Codec::new(b"k");
        let first = sender.seal(&advert(10));
        assert!(receiver.open(&first).is_ok());
        assert_eq!(receiver.open(&first), Err(Rejected::Replay));
        assert_eq!(
            receiver.open(&sender.seal(&advert(9))),
            Err(Rejected::Replay)
        );
        assert!(receiver.open(&sender.seal(&advert(11))).is_ok());
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let mut c = Codec::new(b"k");
        for bytes in [
            &b""[..],
            b"AGV1",
            b"XXXX0123456789012345678901234567890123456789012345",
        ] {
            assert_eq!(c.open(bytes), Err(Rejected::Malformed));
        }
        let mut long_id = c.seal(&advert(1));
        long_id[15] = 200;
        assert_eq!(c.open(&long_id), Err(Rejected::Malformed));
    }
}
