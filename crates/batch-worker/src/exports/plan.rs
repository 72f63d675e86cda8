//! An export's pages: the range `[start, end)` cut at UTC hour boundaries into runs holding
//! about `page_rows` rows each, from a count of the rows per hour. The pages cover the
//! whole range, so a row that arrives late (an old timestamp) still falls in one of them,
//! and a page is read and committed whole.

use serde::{Deserialize, Serialize};

const HOUR_MS: i64 = 3_600_000;

/// One page: rows with a time in `[start_ms, end_ms)`; `rows` as counted when planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub start_ms: i64,
    pub end_ms: i64,
    pub rows: i64,
}

/// Plans the pages of `[start_ms, end_ms)` from `(hour start, rows)` counts in hour order.
/// No page for an empty range; one page for a range with no rows, so late rows are read.
pub fn pages(hours: &[(i64, i64)], start_ms: i64, end_ms: i64, page_rows: i64) -> Vec<Page> {
    if end_ms <= start_ms {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut page = Page {
        start_ms,
        end_ms,
        rows: 0,
    };
    for &(hour, rows) in hours {
        page.rows += rows;
        let cut = (hour + HOUR_MS).min(end_ms);
        if page.rows >= page_rows && cut < end_ms {
            out.push(Page {
                end_ms: cut,
                ..page
            });
            page = Page {
                start_ms: cut,
                end_ms,
                rows: 0,
            };
        }
    }
    out.push(page);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cover_the_range_at_hour_cuts_with_about_the_rows_asked() {
        let start = 1_000 * HOUR_MS;
        let end = start + 10 * HOUR_MS;
        let hours: Vec<(i64, i64)> = (0..10).map(|h| (start + h * HOUR_MS, 40)).collect();
        let p = pages(&hours, start, end, 100);
        assert_eq!(p.first().map(|p| p.start_ms), Some(start));
        assert_eq!(p.last().map(|p| p.end_ms), Some(end));
        for w in p.windows(2) {
            assert_eq!(w[0].end_ms, w[1].start_ms);
            assert_eq!((w[0].end_ms - start) % HOUR_MS, 0);
        }
        assert_eq!(p.iter().map(|p| p.rows).sum::<i64>(), 400);
        assert_eq!(
            p.iter().map(|p| p.rows).collect::<Vec<_>>(),
            [120, 120, 120, 40]
        );
    }

    #[test]
    fn a_range_without_rows_is_one_page_and_an_empty_range_none() {
        assert_eq!(
            pages(&[], 0, HOUR_MS, 10),
            vec![Page {
                start_ms: 0,
                end_ms: HOUR_MS,
                rows: 0
            }]
        );
        assert!(pages(&[], 5, 5, 10).is_empty());
        // A busy last hour does not leave an empty page behind it.
        let p = pages(&[(0, 500)], 0, HOUR_MS, 10);
        assert_eq!(p.len(), 1);
    }
}
