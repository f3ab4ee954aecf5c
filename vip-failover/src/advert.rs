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

/// Fuzzing of advert decoding and authentication (target `advert`,
/// docs/FUZZING.md), and the crate's AFL entry point (`make fuzz`).
///
/// The input's first byte gives the length of the shared key that follows;
/// the rest is a packet. Properties: nothing panics; a packet that opens
/// seals back to itself byte for byte and does not open twice (replay);
/// the packet signed with the right key opens (to the fields it carries)
/// or is malformed, never a forgery; an advert made of the input's bytes
/// seals and opens to itself, opens with no other key, opens with no
/// byte changed, and not again at or below its counter.
#[cfg(test)]
mod fuzz {
    use super::*;

    #[allow(dead_code, unexpected_cfgs)]
    mod harness {
        include!("../../fuzz/harness.rs");
    }
    use harness::{Rng, Target};

    const TARGET: Target = Target {
        name: "advert",
        run,
        generate,
    };

    const HEAD: usize = 4 + 1 + 2 + 8 + 1;

    fn run(data: &[u8]) {
        let Some((&key_len, rest)) = data.split_first() else {
            return;
        };
        let key_len = usize::from(key_len % 65).min(rest.len());
        let (key, packet) = rest.split_at(key_len);

        // The packet as it arrives.
        let mut c = Codec::new(key);
        if let Ok(a) = c.open(packet) {
            assert_eq!(c.seal(&a), packet, "an opened advert seals back to itself");
            assert_eq!(c.open(packet), Err(Rejected::Replay));
        }

        // The packet's body signed with the key: authentic, so it opens or
        // is malformed.
        let body = &packet[..packet.len().saturating_sub(MAC_LEN)];
        let mut signed = body.to_vec();
        let mut mac = c.mac();
        mac.update(body);
        signed.extend_from_slice(&mac.finalize().into_bytes());
        match Codec::new(key).open(&signed) {
            Ok(a) => {
                assert_eq!(a.id.as_bytes(), &body[HEAD..]);
                assert_eq!(a.priority, body[4]);
                assert_eq!(Codec::new(key).seal(&a), signed);
            }
            Err(e) => assert_eq!(e, Rejected::Malformed, "{signed:?}"),
        }

        // An advert made of the input: id from the packet (whole characters,
        // at most MAX_ID_LEN bytes), numbers from its bytes.
        let text = String::from_utf8_lossy(packet);
        let mut id = String::new();
        for ch in text.chars() {
            if id.len() + ch.len_utf8() > MAX_ID_LEN {
                break;
            }
            id.push(ch);
        }
        let byte = |i: usize| packet.get(i).copied().unwrap_or(0);
        let a = Advert {
            id,
            priority: byte(0),
            interval_ms: u16::from_be_bytes([byte(1), byte(2)]),
            counter: u64::from_be_bytes(std::array::from_fn(|i| byte(3 + i))),
        };
        let sender = Codec::new(key);
        let sealed = sender.seal(&a);
        let mut receiver = Codec::new(key);
        assert_eq!(receiver.open(&sealed), Ok(a.clone()));
        // (HMAC pads a short key with zeros: a key and the same key with
        // a zero byte more are one key.)
        let mut other_key = key.to_vec();
        other_key.push(byte(11) | 1);
        assert_eq!(Codec::new(&other_key).open(&sealed), Err(Rejected::Auth));
        let i = usize::from(byte(12)) % sealed.len();
        let mut changed = sealed.clone();
        changed[i] ^= 1 << (byte(13) % 8);
        assert!(Codec::new(key).open(&changed).is_err(), "byte {i} changed");
        let older = Advert {
            counter: a.counter.saturating_sub(u64::from(byte(14) % 2)),
            ..a.clone()
        };
        assert_eq!(receiver.open(&sender.seal(&older)), Err(Rejected::Replay));
        if a.counter < u64::MAX {
            let newer = Advert {
                counter: a.counter + 1,
                ..a
            };
            assert_eq!(receiver.open(&sender.seal(&newer)), Ok(newer));
        }
    }

    fn generate(rng: &mut Rng) -> Vec<u8> {
        let key = rng.bytes(40);
        let ids = ["machine-a", "machine-b", "", "é", "\u{1f600}"];
        let mut id = rng.pick(&ids).to_string();
        if rng.one_in(4) {
            id = id.repeat(rng.below(20));
        }
        let a = Advert {
            id,
            priority: rng.next_u64() as u8,
            interval_ms: rng.next_u64() as u16,
            counter: rng.next_u64(),
        };
        let mut packet = Codec::new(&key).seal(&a);
        match rng.below(5) {
            0 => packet.truncate(rng.below(packet.len() + 1)),
            1 => {
                let i = rng.below(packet.len());
                packet[i] = rng.next_u64() as u8;
            }
            2 => packet[HEAD - 1] = rng.next_u64() as u8,
            _ => {}
        }
        let mut out = vec![key.len() as u8];
        out.extend_from_slice(&key);
        out.extend_from_slice(&packet);
        out
    }

    /// The bounded run (`make test`).
    #[test]
    fn advert_bounded() {
        harness::bounded(&TARGET, 20_000);
    }

    /// The AFL entry point of this crate's target (`make fuzz`).
    #[test]
    #[ignore = "run by make fuzz under AFL++, or with AGENDA_FUZZ_INPUT to replay inputs"]
    fn afl() {
        harness::afl(&[TARGET]);
    }
}
