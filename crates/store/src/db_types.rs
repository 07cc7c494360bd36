//! Column types that read and write the same Rust value on both backends.
//!
//! Postgres has native `UUID` and `TIMESTAMPTZ`; the SQLite schema stores both as TEXT.
//! sqlx's own SQLite encodings do not fit that schema (it writes a `Uuid` as a 16-byte
//! BLOB and a timestamp with a variable number of fraction digits, which does not sort
//! as text), so these newtypes pick the encoding per backend and every query can bind
//! the same value to either pool.

use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteArgumentValue, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Postgres, Sqlite, Type};
use uuid::Uuid;

use crate::error::{Result, StoreError};

/// A uuid column: `UUID` on Postgres, hyphenated lowercase TEXT on SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DbId(pub Uuid);

/// A timestamp column: `TIMESTAMPTZ` on Postgres; on SQLite fixed-width RFC 3339 TEXT
/// (`2025-01-31T12:00:00.123456Z`), so comparing and sorting the text compares times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct DbTime(pub DateTime<Utc>);

impl Type<Postgres> for DbId {
    fn type_info() -> PgTypeInfo {
        <Uuid as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for DbId {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <Uuid as Encode<Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl Decode<'_, Postgres> for DbId {
    fn decode(value: PgValueRef<'_>) -> Result<Self, BoxDynError> {
        Ok(Self(<Uuid as Decode<Postgres>>::decode(value)?))
    }
}

impl Type<Sqlite> for DbId {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl<'q> Encode<'q, Sqlite> for DbId {
    fn encode_by_ref(&self, buf: &mut Vec<SqliteArgumentValue<'q>>) -> Result<IsNull, BoxDynError> {
        <String as Encode<Sqlite>>::encode(self.0.hyphenated().to_string(), buf)
    }
}

impl Decode<'_, Sqlite> for DbId {
    fn decode(value: SqliteValueRef<'_>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<Sqlite>>::decode(value)?;
        Ok(Self(Uuid::parse_str(text)?))
    }
}

impl Type<Postgres> for DbTime {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for DbTime {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <DateTime<Utc> as Encode<Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl Decode<'_, Postgres> for DbTime {
    fn decode(value: PgValueRef<'_>) -> Result<Self, BoxDynError> {
        Ok(Self(<DateTime<Utc> as Decode<Postgres>>::decode(value)?))
    }
}

impl Type<Sqlite> for DbTime {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl<'q> Encode<'q, Sqlite> for DbTime {
    fn encode_by_ref(&self, buf: &mut Vec<SqliteArgumentValue<'q>>) -> Result<IsNull, BoxDynError> {
        let text = self.0.to_rfc3339_opts(SecondsFormat::Micros, true);
        <String as Encode<Sqlite>>::encode(text, buf)
    }
}

impl Decode<'_, Sqlite> for DbTime {
    fn decode(value: SqliteValueRef<'_>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<Sqlite>>::decode(value)?;
        Ok(Self(
            DateTime::parse_from_rfc3339(text)?.with_timezone(&Utc),
        ))
    }
}

/// The current time at the precision both backends keep (microseconds), so a value
/// written and read back compares equal on Postgres and SQLite alike.
pub(crate) fn now() -> DateTime<Utc> {
    let t = Utc::now();
    let micros_only = t.nanosecond() / 1_000 * 1_000;
    t.with_nanosecond(micros_only)
        .expect("a nanosecond value truncated to microseconds stays in range")
}

/// `now() + duration`, or `Invalid` when the duration overflows a timestamp.
pub(crate) fn now_plus(duration: std::time::Duration) -> Result<DateTime<Utc>> {
    chrono::Duration::from_std(duration)
        .ok()
        .and_then(|d| now().checked_add_signed(d))
        .ok_or_else(|| StoreError::invalid("lease", "duration too long"))
}

/// Little-endian f32 bytes, the stored form of a delta vector.
pub(crate) fn f32s_to_le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Inverse of [`f32s_to_le_bytes`]; a length that is not a multiple of 4 is corrupt.
pub(crate) fn le_bytes_to_f32s(bytes: &[u8]) -> Result<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return Err(StoreError::Corrupt(format!(
            "delta blob of {} bytes is not a whole number of f32s",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_bytes_are_little_endian_and_round_trip_bit_exactly() {
        let values = [1.0f32, -0.0, f32::MIN_POSITIVE, 1e-45, f32::NAN, -3.25];
        let bytes = f32s_to_le_bytes(&values);
        assert_eq!(&bytes[..4], &[0x00, 0x00, 0x80, 0x3f]);
        let back = le_bytes_to_f32s(&bytes).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&values));
    }

    #[test]
    fn blob_of_odd_length_is_corrupt() {
        assert!(matches!(
            le_bytes_to_f32s(&[0, 0, 0]),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn sqlite_timestamps_sort_as_text() {
        let a = DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z").unwrap();
        let b = DateTime::parse_from_rfc3339("2025-01-01T00:00:00.5Z").unwrap();
        let fmt = |t: DateTime<chrono::FixedOffset>| {
            t.with_timezone(&Utc)
                .to_rfc3339_opts(SecondsFormat::Micros, true)
        };
        assert_eq!(fmt(a), "2025-01-01T00:00:00.000000Z");
        assert!(fmt(a) < fmt(b));
    }
}
