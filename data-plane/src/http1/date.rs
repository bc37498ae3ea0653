//! The `Date` of the engine's responses: formatted once a second per thread, as hyper caches
//! its own, rather than once per response.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// An IMF-fixdate is always this long (`Sun, 06 Nov 1994 08:49:37 GMT`).
const LENGTH: usize = 29;

thread_local! {
    static CACHED: RefCell<(u64, [u8; LENGTH])> = const { RefCell::new((u64::MAX, [0; LENGTH])) };
}

/// Appends the current time as an HTTP date.
pub fn append(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            let formatted = httpdate::fmt_http_date(now);
            if formatted.len() == LENGTH {
                cached.1.copy_from_slice(formatted.as_bytes());
                cached.0 = second;
            } else {
                out.extend_from_slice(formatted.as_bytes());
                return;
            }
        }
        out.extend_from_slice(&cached.1);
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_date_is_an_http_date_of_now() {
        let mut out = Vec::new();
        super::append(&mut out);
        let parsed = httpdate::parse_http_date(std::str::from_utf8(&out).unwrap()).unwrap();
        let skew = std::time::SystemTime::now()
            .duration_since(parsed)
            .unwrap_or_default();
        assert!(skew.as_secs() < 5, "{skew:?}");
    }
}
