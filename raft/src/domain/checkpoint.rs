//! Signed checkpoints in the C2SP `tlog-checkpoint` signed-note format, signed with Ed25519.
//!
//! ```text
//! fleetlog/<cluster-id>          origin
//! 1234                           tree size
//! <base64 root hash>             RFC 9162 root of the first 1234 events
//!                                blank line: the signed text ends before it
//! — fleetlog/<cluster-id> <base64(key id (4 bytes) || signature (64 bytes))>
//! ```
//!
//! The key's name is the origin. Its key id is the first 4 bytes of
//! `SHA-256(name || "\n" || 0x01 || public key)`, and its verifier string (what auditors pin) is
//! `name+<hex key id>+<base64(0x01 || public key)>`, as the signed-note specification defines,
//! so off-the-shelf note verifiers check fleetlog checkpoints. Ed25519 signatures are
//! deterministic: every node holding the cluster's key signs a given tree identically.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::domain::merkle::Hash;

/// Algorithm byte of Ed25519 keys in signed notes.
const ED25519: u8 = 0x01;
/// Every signature line starts with an em dash and a space.
const SIGNATURE_LINE_START: &str = "\u{2014} ";

/// The origin line of the checkpoints of a cluster.
pub fn origin(cluster_id: &str) -> String {
    format!("fleetlog/{cluster_id}")
}

/// What a checkpoint states: the log named `origin` had `size` events with this root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    /// The signed text: origin, size and root, one per line.
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, BASE64.encode(self.root))
    }
}

/// Why a checkpoint or a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    #[error("malformed verifier key: {0}")]
    MalformedKey(String),
    #[error("the checkpoint is for {found:?}, but the pinned key is for {expected:?}")]
    WrongOrigin { expected: String, found: String },
    #[error("the checkpoint carries no signature by the pinned key {0:?}")]
    NotSignedByKey(String),
    #[error("the checkpoint's signature by {0:?} does not verify: the checkpoint was altered or forged")]
    BadSignature(String),
}

fn key_id(name: &str, public: &VerifyingKey) -> [u8; 4] {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update(b"\n");
    hasher.update([ED25519]);
    hasher.update(public.as_bytes());
    let digest = hasher.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// Signs checkpoints with the cluster's key.
pub struct NoteSigner {
    name: String,
    key: SigningKey,
    key_id: [u8; 4],
}

impl NoteSigner {
    pub fn new(name: String, seed: &[u8; 32]) -> NoteSigner {
        let key = SigningKey::from_bytes(seed);
        let key_id = key_id(&name, &key.verifying_key());
        NoteSigner { name, key, key_id }
    }

    /// The public half, for auditors to pin.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier { name: self.name.clone(), key: self.key.verifying_key(), key_id: self.key_id }
    }

    /// The signed note of `checkpoint`.
    pub fn sign(&self, checkpoint: &Checkpoint) -> String {
        let body = checkpoint.body();
        let signature = self.key.sign(body.as_bytes());
        let mut blob = Vec::with_capacity(4 + 64);
        blob.extend_from_slice(&self.key_id);
        blob.extend_from_slice(&signature.to_bytes());
        format!("{body}\n{SIGNATURE_LINE_START}{} {}\n", self.name, BASE64.encode(blob))
    }
}

/// A pinned public key: checks that a checkpoint was signed by it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key: VerifyingKey,
    key_id: [u8; 4],
}

impl NoteVerifier {
    /// Parses a verifier string `name+hexid+base64(0x01 || key)`.
    pub fn parse(text: &str) -> Result<NoteVerifier, CheckpointError> {
        let malformed = |why: &str| CheckpointError::MalformedKey(format!("{why} (expected name+keyid+key)"));
        let text = text.trim();
        // The name never holds '+' but base64 may: split from the left.
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(encoded)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(malformed("not three parts joined by '+'"));
        };
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+') {
            return Err(malformed("the name is empty or has spaces"));
        }
        let id: [u8; 4] = hex::decode(id_hex)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| malformed("the key id is not 8 hex digits"))?;
        let bytes = BASE64.decode(encoded).map_err(|_| malformed("the key is not base64"))?;
        let (&algorithm, public) = bytes.split_first().ok_or_else(|| malformed("the key is empty"))?;
        if algorithm != ED25519 {
            return Err(malformed("the key is not an Ed25519 key"));
        }
        let public: [u8; 32] = public.try_into().map_err(|_| malformed("an Ed25519 key has 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&public).map_err(|_| malformed("not a valid Ed25519 point"))?;
        if key_id(name, &key) != id {
            return Err(malformed("the key id does not match the name and key"));
        }
        Ok(NoteVerifier { name: name.to_string(), key, key_id: id })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks the signature of a signed note and returns the checkpoint it states.
    pub fn open(&self, note: &str) -> Result<Checkpoint, CheckpointError> {
        let malformed = |why: &str| CheckpointError::Malformed(why.to_string());
        let split = note.find("\n\n").ok_or_else(|| malformed("no blank line before the signatures"))?;
        let (body, signatures) = (&note[..split + 1], &note[split + 2..]);
        let mut lines = body.lines();
        let origin = lines.next().filter(|line| !line.is_empty()).ok_or_else(|| malformed("no origin line"))?;
        let size_line = lines.next().ok_or_else(|| malformed("no tree size line"))?;
        let size: u64 = size_line
            .parse()
            .ok()
            .filter(|_| size_line.bytes().all(|byte| byte.is_ascii_digit()))
            .filter(|_| size_line == "0" || !size_line.starts_with('0'))
            .ok_or_else(|| malformed("the tree size is not a decimal number"))?;
        let root_line = lines.next().ok_or_else(|| malformed("no root hash line"))?;
        let root: Hash = BASE64
            .decode(root_line)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| malformed("the root is not 32 bytes of base64"))?;
        if origin != self.name {
            return Err(CheckpointError::WrongOrigin { expected: self.name.clone(), found: origin.to_string() });
        }
        if !signatures.ends_with('\n') {
            return Err(malformed("the signature lines do not end with a newline"));
        }
        let mut signed_by_key = None;
        for line in signatures.lines() {
            let rest =
                line.strip_prefix(SIGNATURE_LINE_START).ok_or_else(|| malformed("a signature line lacks '— '"))?;
            let (name, encoded) = rest.split_once(' ').ok_or_else(|| malformed("a signature line lacks its name"))?;
            let blob = BASE64.decode(encoded).map_err(|_| malformed("a signature is not base64"))?;
            if name == self.name && blob.len() == 68 && blob[..4] == self.key_id {
                signed_by_key = Some(blob);
            }
        }
        let blob = signed_by_key.ok_or_else(|| CheckpointError::NotSignedByKey(self.to_string()))?;
        let signature = Signature::from_slice(&blob[4..]).map_err(|_| malformed("a signature is not 64 bytes"))?;
        self.key
            .verify_strict(body.as_bytes(), &signature)
            .map_err(|_| CheckpointError::BadSignature(self.name.clone()))?;
        Ok(Checkpoint { origin: origin.to_string(), size, root })
    }
}

impl std::fmt::Display for NoteVerifier {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut key = Vec::with_capacity(33);
        key.push(ED25519);
        key.extend_from_slice(self.key.as_bytes());
        write!(formatter, "{}+{}+{}", self.name, hex::encode(self.key_id), BASE64.encode(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> NoteSigner {
        NoteSigner::new(origin("0123456789abcdef"), &[7u8; 32])
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint { origin: origin("0123456789abcdef"), size: 1234, root: [9u8; 32] }
    }

    #[test]
    fn a_signed_checkpoint_opens_with_its_verifier_string() {
        let note = signer().sign(&checkpoint());
        let lines: Vec<&str> = note.lines().collect();
        assert_eq!(lines[0], "fleetlog/0123456789abcdef");
        assert_eq!(lines[1], "1234");
        assert_eq!(lines[2], BASE64.encode([9u8; 32]));
        assert_eq!(lines[3], "");
        assert!(lines[4].starts_with("\u{2014} fleetlog/0123456789abcdef "), "{note}");
        assert_eq!(lines.len(), 5);
        let verifier = NoteVerifier::parse(&signer().verifier().to_string()).unwrap();
        assert_eq!(verifier.open(&note).unwrap(), checkpoint());
        // Deterministic: a second signer with the same key writes the same bytes.
        assert_eq!(signer().sign(&checkpoint()), note);
    }

    #[test]
    fn altered_notes_and_other_keys_are_refused() {
        let note = signer().sign(&checkpoint());
        let verifier = signer().verifier();
        let other = NoteSigner::new(origin("0123456789abcdef"), &[8u8; 32]);
        assert!(matches!(other.verifier().open(&note), Err(CheckpointError::NotSignedByKey(_))));
        assert!(matches!(verifier.open(&other.sign(&checkpoint())), Err(CheckpointError::NotSignedByKey(_))));

        let bigger = note.replacen("\n1234\n", "\n1235\n", 1);
        assert!(matches!(verifier.open(&bigger), Err(CheckpointError::BadSignature(_))));

        // Flip one byte of the signature itself.
        let line_start = note.rfind('\u{2014}').unwrap();
        let (head, signature_line) = note.split_at(line_start);
        let (prefix, encoded) = signature_line.trim_end().rsplit_once(' ').unwrap();
        let mut blob = BASE64.decode(encoded).unwrap();
        blob[20] ^= 0x40;
        let forged = format!("{head}{prefix} {}\n", BASE64.encode(blob));
        assert!(matches!(verifier.open(&forged), Err(CheckpointError::BadSignature(_))));

        let renamed = NoteSigner::new(origin("ffff"), &[7u8; 32]);
        let elsewhere = Checkpoint { origin: origin("ffff"), ..checkpoint() };
        assert!(matches!(verifier.open(&renamed.sign(&elsewhere)), Err(CheckpointError::WrongOrigin { .. })));
        for broken in ["", "fleetlog/x\n1\n", "fleetlog/0123456789abcdef\n01\nAA==\n\n"] {
            assert!(matches!(verifier.open(broken), Err(CheckpointError::Malformed(_))), "{broken:?}");
        }
    }

    #[test]
    fn verifier_strings_round_trip_and_bad_ones_are_refused() {
        let text = signer().verifier().to_string();
        assert_eq!(NoteVerifier::parse(&text).unwrap().to_string(), text);
        let (rest, key) = text.rsplit_once('+').unwrap();
        let (name, _) = rest.rsplit_once('+').unwrap();
        assert!(NoteVerifier::parse(&format!("{name}+00000000+{key}")).is_err());
        assert!(NoteVerifier::parse(&format!("{name}+{key}")).is_err());
        assert!(NoteVerifier::parse("nonsense").is_err());
    }

    #[test]
    fn keys_whose_base64_holds_a_plus_parse() {
        let with_plus = (0u8..=255)
            .map(|byte| NoteSigner::new(origin("0123456789abcdef"), &[byte; 32]))
            .find(|signer| signer.verifier().to_string().rsplit('+').count() > 3)
            .expect("some key's base64 contains '+'");
        let text = with_plus.verifier().to_string();
        let verifier = NoteVerifier::parse(&text).unwrap();
        assert_eq!(verifier.to_string(), text);
        assert_eq!(verifier.open(&with_plus.sign(&checkpoint())).unwrap(), checkpoint());
    }
}
