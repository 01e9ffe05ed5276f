//! Stream tokens. A sync token `s{stream}_{typing}` names a position in the server's one stream
//! (events, receipts, account data, to-device, device lists, presence share one counter) and the
//! typing serial. Pagination tokens `t{stream}` name a timeline position.

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncToken {
    pub stream: i64,
    pub typing: u64,
}

impl SyncToken {
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::invalid_param(format!("Invalid since token {s:?}"));
        let rest = s.strip_prefix('s').ok_or_else(bad)?;
        let (stream, typing) = rest.split_once('_').ok_or_else(bad)?;
        Ok(SyncToken {
            stream: stream.parse().map_err(|_| bad())?,
            typing: typing.parse().map_err(|_| bad())?,
        })
    }
}

impl std::fmt::Display for SyncToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s{}_{}", self.stream, self.typing)
    }
}

/// Reads the stream position from a pagination token or a sync token.
pub fn parse_position(s: &str) -> Result<i64> {
    if let Some(rest) = s.strip_prefix('t') {
        return rest
            .parse()
            .map_err(|_| Error::invalid_param(format!("Invalid pagination token {s:?}")));
    }
    if s.starts_with('s') {
        return Ok(SyncToken::parse(s)?.stream + 1);
    }
    Err(Error::invalid_param(format!(
        "Invalid pagination token {s:?}"
    )))
}

pub fn position_token(pos: i64) -> String {
    format!("t{pos}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let t = SyncToken {
            stream: 42,
            typing: 7,
        };
        assert_eq!(SyncToken::parse(&t.to_string()).expect("parses"), t);
        assert!(SyncToken::parse("garbage").is_err());
        assert_eq!(parse_position("t10").expect("parses"), 10);
        assert_eq!(parse_position("s10_3").expect("parses"), 11);
        assert!(parse_position("x").is_err());
    }
}
