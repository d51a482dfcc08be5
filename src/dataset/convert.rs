//! Format conversion with polars, guarded so that a parser panic on hostile bytes becomes an
//! error for that request instead of a dead server.

use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};

use polars::prelude::*;
use serde::{Deserialize, Serialize};

/// Formats accepted on upload and offered on download.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DatasetFormat {
    Parquet,
    Csv,
    Jsonl,
}

impl DatasetFormat {
    /// Parses `parquet`, `csv` or `jsonl` (also `ndjson`).
    pub fn parse(input: &str) -> Option<Self> {
        match input.to_ascii_lowercase().as_str() {
            "parquet" => Some(Self::Parquet),
            "csv" => Some(Self::Csv),
            "jsonl" | "ndjson" => Some(Self::Jsonl),
            _ => None,
        }
    }

    /// Maps a `Content-Type` header (parameters ignored) to a format.
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/vnd.apache.parquet" | "application/x-parquet" | "application/parquet" => {
                Some(Self::Parquet)
            }
            "text/csv" | "application/csv" => Some(Self::Csv),
            "application/x-ndjson"
            | "application/jsonl"
            | "application/jsonlines"
            | "application/x-jsonlines" => Some(Self::Jsonl),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Parquet => "application/vnd.apache.parquet",
            Self::Csv => "text/csv",
            Self::Jsonl => "application/x-ndjson",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Parquet => "parquet",
            Self::Csv => "csv",
            Self::Jsonl => "jsonl",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ColumnInfo {
    pub name: String,
    pub dtype: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetSummary {
    pub rows: usize,
    pub columns: Vec<ColumnInfo>,
}

/// Runs a polars operation, turning both its errors and its panics into a message.
pub fn guarded<T>(what: &str, operation: impl FnOnce() -> PolarsResult<T>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(operation)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(format!("{what}: {error}")),
        Err(_) => Err(format!(
            "{what}: the input could not be parsed (reader aborted)"
        )),
    }
}

fn read_frame(bytes: &[u8], format: DatasetFormat) -> Result<DataFrame, String> {
    if bytes.is_empty() {
        return Err("the body is empty".to_string());
    }
    let cursor = Cursor::new(bytes.to_vec());
    match format {
        DatasetFormat::Parquet => {
            guarded("invalid parquet", || ParquetReader::new(cursor).finish())
        }
        DatasetFormat::Csv => guarded("invalid csv", || {
            CsvReadOptions::default()
                .with_has_header(true)
                .into_reader_with_file_handle(cursor)
                .finish()
        }),
        DatasetFormat::Jsonl => guarded("invalid json lines", || {
            JsonReader::new(cursor)
                .with_json_format(JsonFormat::JsonLines)
                .finish()
        }),
    }
}

fn summarise(frame: &DataFrame) -> DatasetSummary {
    DatasetSummary {
        rows: frame.height(),
        columns: frame
            .columns()
            .iter()
            .map(|column| ColumnInfo {
                name: column.name().to_string(),
                dtype: column.dtype().to_string(),
            })
            .collect(),
    }
}

/// Parses an upload and re-encodes it as Parquet (zstd).
pub fn to_parquet(
    bytes: &[u8],
    format: DatasetFormat,
) -> Result<(Vec<u8>, DatasetSummary), String> {
    let mut frame = read_frame(bytes, format)?;
    if frame.width() == 0 {
        return Err("the dataset has no columns".to_string());
    }
    let summary = summarise(&frame);
    let mut out = Vec::new();
    guarded("cannot encode parquet", || {
        ParquetWriter::new(&mut out)
            .with_compression(ParquetCompression::Zstd(None))
            .finish(&mut frame)
    })?;
    Ok((out, summary))
}

/// Reads Parquet bytes into a frame (errors and reader panics become messages).
pub fn parquet_to_frame(bytes: &[u8]) -> Result<DataFrame, String> {
    read_frame(bytes, DatasetFormat::Parquet)
}

/// Encodes a frame as Parquet (zstd).
pub fn frame_to_parquet(frame: &mut DataFrame) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    guarded("cannot encode parquet", || {
        ParquetWriter::new(&mut out)
            .with_compression(ParquetCompression::Zstd(None))
            .finish(frame)
    })?;
    Ok(out)
}

/// Row count of each row group of a Parquet file (reads the footer only).
pub fn parquet_row_groups(bytes: &[u8]) -> Result<Vec<usize>, String> {
    let mut reader = ParquetReader::new(Cursor::new(bytes));
    guarded("invalid parquet", || {
        Ok(reader
            .get_metadata()?
            .row_groups
            .iter()
            .map(|group| group.num_rows())
            .collect())
    })
}

/// Rows `offset..offset + rows` of a Parquet file; row groups outside the range are skipped.
pub fn parquet_slice_to_frame(
    bytes: &[u8],
    offset: usize,
    rows: usize,
) -> Result<DataFrame, String> {
    guarded("invalid parquet", || {
        ParquetReader::new(Cursor::new(bytes))
            .with_slice(Some((offset, rows)))
            .read_parallel(ParallelStrategy::RowGroups)
            .finish()
    })
}

/// Decodes stored Parquet and encodes it in the requested format.
pub fn from_parquet(bytes: &[u8], format: DatasetFormat) -> Result<Vec<u8>, String> {
    if format == DatasetFormat::Parquet {
        return Ok(bytes.to_vec());
    }
    let mut frame = read_frame(bytes, DatasetFormat::Parquet)?;
    let mut out = Vec::new();
    match format {
        DatasetFormat::Csv => guarded("cannot encode csv", || {
            CsvWriter::new(&mut out)
                .include_header(true)
                .finish(&mut frame)
        })?,
        DatasetFormat::Jsonl => guarded("cannot encode json lines", || {
            JsonWriter::new(&mut out)
                .with_json_format(JsonFormat::JsonLines)
                .finish(&mut frame)
        })?,
        DatasetFormat::Parquet => unreachable!("handled above"),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "id,text,label\n1,Governed by the laws of Delaware,governing_law\n2,Either party may terminate,termination\n";

    #[test]
    fn csv_round_trips_through_parquet_in_every_format() {
        let (parquet, summary) = to_parquet(CSV.as_bytes(), DatasetFormat::Csv).unwrap();
        assert_eq!(summary.rows, 2);
        assert_eq!(summary.columns.len(), 3);
        let csv = String::from_utf8(from_parquet(&parquet, DatasetFormat::Csv).unwrap()).unwrap();
        assert_eq!(csv, CSV);
        let jsonl =
            String::from_utf8(from_parquet(&parquet, DatasetFormat::Jsonl).unwrap()).unwrap();
        assert_eq!(jsonl.lines().count(), 2);
        assert!(jsonl.contains("\"label\":\"termination\""));
        let (_, again) = to_parquet(jsonl.as_bytes(), DatasetFormat::Jsonl).unwrap();
        assert_eq!(again.rows, 2);
    }

    #[test]
    fn corrupt_and_truncated_parquet_are_errors_not_panics() {
        let (parquet, _) = to_parquet(CSV.as_bytes(), DatasetFormat::Csv).unwrap();
        let truncated = &parquet[..parquet.len() / 2];
        assert!(to_parquet(truncated, DatasetFormat::Parquet).is_err());
        let mut garbled = parquet.clone();
        for byte in garbled.iter_mut().skip(8).step_by(7) {
            *byte ^= 0x5a;
        }
        assert!(to_parquet(&garbled, DatasetFormat::Parquet).is_err());
        assert!(to_parquet(b"PAR1 not really", DatasetFormat::Parquet).is_err());
        assert!(to_parquet(b"", DatasetFormat::Csv).is_err());
    }

    #[test]
    fn content_types_map_to_formats() {
        assert_eq!(
            DatasetFormat::from_content_type("text/csv; charset=utf-8"),
            Some(DatasetFormat::Csv)
        );
        assert_eq!(
            DatasetFormat::from_content_type("application/x-ndjson"),
            Some(DatasetFormat::Jsonl)
        );
        assert_eq!(DatasetFormat::from_content_type("application/json"), None);
    }
}
