//! Cuts a CSV stream (PostgreSQL's `COPY ... (FORMAT csv)` output) into parts of about a
//! given size, each ending at a record boundary and knowing how many records it holds.
//!
//! A record ends at a newline outside quotes. Quotes inside a quoted field are doubled
//! (`""`), so toggling on every quote byte keeps the state right across them; a newline
//! inside a quoted field (a prop value may hold one) does not end the record.

/// One part: whole records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub data: Vec<u8>,
    pub rows: u64,
}

/// Splits a byte stream into [`Part`]s of at least `part_bytes` (except the last): a part
/// is cut at the last record boundary of the bytes pushed once it holds that many.
#[derive(Debug)]
pub struct Splitter {
    part_bytes: usize,
    buf: Vec<u8>,
    in_quotes: bool,
    /// Bytes of `buf` up to the end of its last whole record, and the records in them.
    boundary: usize,
    rows: u64,
    scanned: usize,
}

impl Splitter {
    pub fn new(part_bytes: usize) -> Self {
        Self {
            part_bytes,
            buf: Vec::with_capacity(part_bytes + part_bytes / 4),
            in_quotes: false,
            boundary: 0,
            rows: 0,
            scanned: 0,
        }
    }

    /// Takes more of the stream; returns a part when one is full.
    pub fn push(&mut self, bytes: &[u8]) -> Option<Part> {
        self.buf.extend_from_slice(bytes);
        for (i, b) in self.buf.iter().enumerate().skip(self.scanned) {
            match b {
                b'"' => self.in_quotes = !self.in_quotes,
                b'\n' if !self.in_quotes => {
                    self.rows += 1;
                    self.boundary = i + 1;
                }
                _ => {}
            }
        }
        self.scanned = self.buf.len();
        (self.boundary >= self.part_bytes).then(|| self.take())
    }

    fn take(&mut self) -> Part {
        let rest = self.buf.split_off(self.boundary);
        let data = std::mem::replace(&mut self.buf, rest);
        let part = Part {
            data,
            rows: self.rows,
        };
        // What is left was scanned already (and holds no whole record).
        self.scanned = self.buf.len();
        self.boundary = 0;
        self.rows = 0;
        part
    }

    /// The rest of the stream, once it has ended (`None` when nothing is left). A stream
    /// that ends inside a record (no final newline) counts it as one.
    pub fn finish(mut self) -> Option<Part> {
        if self.boundary < self.buf.len() {
            self.buf.push(b'\n');
            self.rows += 1;
            self.boundary = self.buf.len();
        }
        (!self.buf.is_empty()).then(|| self.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(input: &[u8], part_bytes: usize, feed: usize) -> Vec<Part> {
        let mut s = Splitter::new(part_bytes);
        let mut out = Vec::new();
        for chunk in input.chunks(feed) {
            out.extend(s.push(chunk));
        }
        out.extend(s.finish());
        out
    }

    #[test]
    fn parts_end_at_records_and_count_them_whatever_the_feed() {
        let csv = b"1,a,\"x\"\"y\"\n2,\"multi\nline\",z\n3,,\n4,\"\"\"\",q\n";
        for part_bytes in [1, 5, 12, 1000] {
            for feed in [1, 3, 7, csv.len()] {
                let parts = split(csv, part_bytes, feed);
                let joined: Vec<u8> = parts.iter().flat_map(|p| p.data.clone()).collect();
                assert_eq!(joined, csv.to_vec(), "{part_bytes}/{feed}");
                assert_eq!(parts.iter().map(|p| p.rows).sum::<u64>(), 4);
                for p in &parts {
                    assert!(p.data.ends_with(b"\n"));
                    let text = String::from_utf8_lossy(&p.data);
                    assert!(!text.starts_with("line"), "cut inside a quoted field");
                }
                if part_bytes == 1 && feed == 1 {
                    assert_eq!(parts.len(), 4, "one record per part");
                }
            }
        }
    }

    #[test]
    fn an_empty_stream_has_no_part_and_a_last_record_without_newline_counts() {
        assert!(split(b"", 10, 1).is_empty());
        let parts = split(b"1,a\n2,b", 1000, 2);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].rows, 2);
    }
}
