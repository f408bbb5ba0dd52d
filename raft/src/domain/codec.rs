//! The one place that turns stored records and Raft messages into bytes and back.
//!
//! Every encoded value starts with a format-version byte so a future codec can read old data and
//! the swap away from bincode stays a change to this module only.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Error;

/// Version byte written in front of every record this build encodes.
pub const FORMAT_VERSION: u8 = 1;

/// Most bytes a decoded value may claim. Lengths in a record decide allocations before the
/// bytes behind them are read, so without a bound a damaged length (fuzzing found one) asks for
/// gigabytes; the largest honest value, a peer call of 100 log entries, stays far below.
const DECODED_BYTES_MAX: usize = 512 * 1024 * 1024;

fn config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<DECODED_BYTES_MAX>,
> {
    bincode::config::standard().with_limit::<DECODED_BYTES_MAX>()
}

/// Encodes `value` as `[FORMAT_VERSION] ++ bincode(value)`.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    let mut bytes = Vec::with_capacity(64);
    bytes.push(FORMAT_VERSION);
    bincode::serde::encode_into_std_write(value, &mut bytes, config())
        .map_err(|error| Error::Encode(error.to_string()))?;
    Ok(bytes)
}

/// Decodes bytes written by [`encode`], refusing unknown versions and trailing garbage.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let (&version, body) = bytes.split_first().ok_or(Error::EmptyRecord)?;
    if version != FORMAT_VERSION {
        return Err(Error::UnknownFormatVersion(version));
    }
    let (value, read) =
        bincode::serde::decode_from_slice(body, config()).map_err(|error| Error::Decode(error.to_string()))?;
    if read != body.len() {
        return Err(Error::TrailingBytes(body.len() - read));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `stored_record` fuzz target: a length of 4,294,901,760 in a 6-byte record
    /// made the decoder allocate 4 GiB before reading the bytes behind it.
    #[test]
    fn a_damaged_length_is_refused_without_a_huge_allocation() {
        let record = [FORMAT_VERSION, 0xfc, 0x00, 0x00, 0xff, 0xff];
        assert!(matches!(decode::<crate::domain::records::ReleaseRecord>(&record), Err(Error::Decode(_))));
        assert!(matches!(decode::<String>(&record), Err(Error::Decode(_))));
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Sample {
        name: String,
        maybe: Option<u64>,
        list: Vec<i64>,
    }

    #[test]
    fn round_trip_keeps_value_and_prefixes_version() {
        let sample = Sample { name: "web-1".into(), maybe: Some(7), list: vec![-1, 2] };
        let bytes = encode(&sample).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode::<Sample>(&bytes).unwrap(), sample);
    }

    #[test]
    fn refuses_unknown_version_empty_and_trailing_bytes() {
        let mut bytes = encode(&Sample { name: "a".into(), maybe: None, list: vec![] }).unwrap();
        assert!(matches!(decode::<Sample>(&[]), Err(Error::EmptyRecord)));
        bytes.push(0);
        assert!(matches!(decode::<Sample>(&bytes), Err(Error::TrailingBytes(1))));
        bytes[0] = 9;
        assert!(matches!(decode::<Sample>(&bytes), Err(Error::UnknownFormatVersion(9))));
    }
}
