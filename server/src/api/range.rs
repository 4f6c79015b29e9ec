//! The HTTP `Range` header (RFC 9110 §14.2), single byte ranges only: what
//! video players send. Multiple ranges are answered with the whole body.

/// A satisfiable byte range, inclusive end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive).
    pub end: u64,
}

/// What a `Range` header asks for, given the representation's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No range, an unsupported unit or several ranges: send everything.
    Full,
    /// One satisfiable range: 206.
    Partial(ByteRange),
    /// A syntactically valid range that lies outside the body: 416.
    Unsatisfiable,
}

/// Parses a `Range` header value against a body of `len` bytes.
pub fn parse(header: &str, len: u64) -> RangeRequest {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || s.len() > 19 || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    if a.is_empty() {
        // Suffix range: the last n bytes.
        return match num(b) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(n) if len > 0 => RangeRequest::Partial(ByteRange {
                start: len.saturating_sub(n),
                end: len - 1,
            }),
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Full,
        };
    }
    let Some(start) = num(a) else {
        return RangeRequest::Full;
    };
    let end = if b.is_empty() {
        None
    } else {
        match num(b) {
            Some(e) if e >= start => Some(e),
            _ => return RangeRequest::Full,
        }
    };
    if start >= len {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Partial(ByteRange {
        start,
        end: end.map_or(len - 1, |e| e.min(len - 1)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn forms() {
        let p = |start, end| RangeRequest::Partial(ByteRange { start, end });
        assert_eq!(parse("bytes=0-99", 1000), p(0, 99));
        assert_eq!(parse("bytes=500-", 1000), p(500, 999));
        assert_eq!(parse("bytes=-100", 1000), p(900, 999));
        assert_eq!(parse("bytes=900-5000", 1000), p(900, 999));
        assert_eq!(parse("bytes=1000-", 1000), RangeRequest::Unsatisfiable);
        assert_eq!(parse("bytes=-0", 1000), RangeRequest::Unsatisfiable);
        assert_eq!(parse("bytes=5-1", 1000), RangeRequest::Full);
        assert_eq!(parse("bytes=0-1,5-6", 1000), RangeRequest::Full);
        assert_eq!(parse("items=0-1", 1000), RangeRequest::Full);
        assert_eq!(parse("bytes=+1-2", 1000), RangeRequest::Full);
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_in_bounds(h in ".{0,40}", len in 0u64..10_000) {
            if let RangeRequest::Partial(r) = parse(&h, len) {
                prop_assert!(r.start <= r.end && r.end < len);
            }
        }

        #[test]
        fn explicit_ranges_round_trip(len in 1u64..1_000_000, a in 0u64..1_000_000, n in 0u64..1000) {
            let start = a % len;
            let end = (start + n).min(len - 1);
            prop_assert_eq!(parse(&format!("bytes={start}-{end}"), len), RangeRequest::Partial(ByteRange { start, end }));
        }
    }
}
