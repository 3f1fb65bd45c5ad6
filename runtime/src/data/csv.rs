//! CSV (read with the [csv] crate), from a file or any reader, plain or gzip-compressed: one
//! sample per record, features first.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::{class_sample, Class};
use crate::{Error, Result};

/// Labelled samples from a CSV file (`.csv`, or gzip-compressed) whose records hold `N`
/// numeric features followed by an integer label in `0..C`. With `has_header`, the first
/// record is a header and is skipped. Errors name the file and the line.
pub fn read_classification<const N: usize, const C: usize>(
    path: impl AsRef<Path>,
    has_header: bool,
) -> Result<Vec<([f32; N], Class<C>)>> {
    let path = path.as_ref();
    read_classification_from(super::open_file(path)?, path, has_header)
}

/// [`read_classification`] from any reader (standard input, bytes in memory, a socket);
/// gzip-compressed data, known by its first bytes, is decompressed. `source` names the data in
/// errors.
pub fn read_classification_from<const N: usize, const C: usize>(
    reader: impl Read,
    source: impl AsRef<Path>,
    has_header: bool,
) -> Result<Vec<([f32; N], Class<C>)>> {
    let path = source.as_ref();
    // The first two bytes, however the reader hands them out (a pipe may give one at a time).
    let mut reader = BufReader::new(reader);
    let mut head = Vec::with_capacity(2);
    while head.len() < 2 {
        let got = reader.fill_buf().map_err(|e| Error::io(path, e))?;
        let Some(&byte) = got.first() else {
            break;
        };
        head.push(byte);
        reader.consume(1);
    }
    let whole = std::io::Cursor::new(head.clone()).chain(reader);
    let input: Box<dyn Read> = match head[..] {
        [0x1f, 0x8b] => Box::new(flate2::read::MultiGzDecoder::new(whole)),
        _ => Box::new(whole),
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(has_header)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(input);
    let mut samples = Vec::new();
    let mut numbers = Vec::with_capacity(N + 1);
    for record in reader.records() {
        let record = record.map_err(|e| Error::data(path, format!("{e}")))?;
        let line = record.position().map_or(0, |p| p.line());
        let row = format!("line {line}");
        if record.len() != N + 1 {
            return Err(Error::data(
                path,
                format!(
                    "{row}: {} columns, expected {} ({N} features and a label)",
                    record.len(),
                    N + 1
                ),
            ));
        }
        numbers.clear();
        for (column, field) in record.iter().enumerate() {
            let v: f64 = field.parse().map_err(|_| {
                Error::data(
                    path,
                    format!("{row}, column {}: `{field}` is not a number", column + 1),
                )
            })?;
            numbers.push(v);
        }
        samples.push(class_sample(path, &row, &numbers[..N], numbers[N])?);
    }
    if samples.is_empty() {
        return Err(Error::data(path, "the file holds no data rows"));
    }
    Ok(samples)
}
