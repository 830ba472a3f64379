//! One binary encoding for everything this crate writes: log entries, state
//! on disk, and frames on the wire.
//!
//! It is bincode 2 through serde, with a decode limit. The limit matters for
//! anything read from a socket or a file: a corrupted or hostile length field
//! must produce an error, not an attempt to allocate gigabytes.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The largest value [`decode`] accepts, in bytes (1 GiB). Network frames
/// have their own, smaller limit, checked before the bytes are even read
/// (see `network::frame`).
pub const MAX_DECODE_BYTES: usize = 1 << 30;

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_DECODE_BYTES>,
>;

fn config() -> Config {
    bincode::config::standard().with_limit::<MAX_DECODE_BYTES>()
}

/// Why bytes could not be turned back into a value.
#[derive(Debug, thiserror::Error)]
#[error("cannot decode {what}: {reason}")]
pub struct DecodeError {
    /// What was being decoded (a type name).
    pub what: &'static str,
    /// bincode's own message.
    pub reason: String,
}

/// Encodes a value. Encoding our own types cannot fail, except for a
/// serde impl that refuses (a map with non-string keys never does here).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, config())
        .unwrap_or_else(|e| panic!("invariant: our types always encode ({e})"))
}

/// Decodes a whole value; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let err = |reason: String| DecodeError { what: std::any::type_name::<T>(), reason };
    let (value, used) = bincode::serde::decode_from_slice(bytes, config()).map_err(|e| err(e.to_string()))?;
    if used != bytes.len() {
        return Err(err(format!("{} trailing bytes", bytes.len() - used)));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_trailing_bytes_rejected() {
        let v = (7u64, String::from("x"), vec![1u8, 2, 3]);
        let mut bytes = encode(&v);
        assert_eq!(decode::<(u64, String, Vec<u8>)>(&bytes).unwrap(), v);
        bytes.push(0);
        assert!(decode::<(u64, String, Vec<u8>)>(&bytes).is_err());
    }

    #[test]
    fn huge_length_prefix_is_an_error_not_an_allocation() {
        // A Vec<u8> whose varint length claims u64::MAX bytes.
        let bytes = [0xFFu8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        assert!(decode::<Vec<u8>>(&bytes).is_err());
    }
}
