//! Identifiers: 32-byte values shown as 64 lowercase hex digits.
//!
//! Blob ids are keyed BLAKE3 hashes of the blob's plaintext (see [`crate::crypto::RepoKeys::blob_id`]);
//! storage object ids (packs, index files, snapshots, key slots, locks) are random. Each kind has its own
//! newtype so that a pack id can never be passed where a blob id is meant.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// What this id names, for messages.
            pub const KIND: &'static str = $what;

            /// A fresh random id.
            pub fn random() -> Self {
                Self(rand::random())
            }

            /// The id as 64 hex digits.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first 8 hex digits, as listings show it.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }

            /// Parses 64 hex digits.
            ///
            /// # Errors
            /// [`Error::InvalidInput`] when `s` is not 64 hex digits.
            pub fn from_hex(s: &str) -> Result<Self, Error> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).map_err(|_| {
                    Error::InvalidInput(format!("{} id {s:?} is not 64 hex digits", $what))
                })?;
                Ok(Self(out))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                Self::from_hex(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::from_hex(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A blob (chunk of file data or a tree): keyed BLAKE3 of its plaintext.
    BlobId, "blob"
);
id_type!(
    /// A pack file under `data/`.
    PackId, "pack"
);
id_type!(
    /// An index file under `index/`.
    IndexId, "index"
);
id_type!(
    /// A snapshot under `snapshots/`.
    SnapshotId, "snapshot"
);
id_type!(
    /// A key slot under `keys/`.
    KeyId, "key"
);
id_type!(
    /// A lock under `locks/`.
    LockId, "lock"
);
id_type!(
    /// The repository itself (bound into every ciphertext).
    RepoId, "repository"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        let id = PackId::random();
        assert_eq!(PackId::from_hex(&id.to_hex()).unwrap(), id);
        assert_eq!(id.short().len(), 8);
        assert!(matches!(
            PackId::from_hex("abc"),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            PackId::from_hex(&"zz".repeat(32)),
            Err(Error::InvalidInput(_))
        ));
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<PackId>(&json).unwrap(), id);
    }
}
