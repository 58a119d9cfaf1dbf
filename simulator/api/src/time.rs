//! RFC 3339 timestamps as Kubernetes writes them (`2026-11-26T03:04:05Z`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The (year, month 1-12, day 1-31) of a day counted from 1970-01-01 in
/// the proleptic Gregorian calendar (Howard Hinnant's algorithm).
pub fn civil_date(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Seconds-precision RFC 3339 in UTC.
pub fn rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rest / 3600, rest % 3600 / 60, rest % 60);
    let (year, month, day) = civil_date(days as i64);
    if !(0..=9999).contains(&year) {
        return format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z");
    }
    // Written digit by digit: controllers stamp every status they write,
    // and the formatting machinery cost more than the date arithmetic.
    let mut text = *b"0000-00-00T00:00:00Z";
    let fields = [
        (0, 4, year as u64),
        (5, 2, month as u64),
        (8, 2, day as u64),
        (11, 2, h),
        (14, 2, m),
        (17, 2, s),
    ];
    for (at, width, mut value) in fields {
        for digit in text[at..at + width].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    text.iter().map(|&b| char::from(b)).collect()
}

/// A time as a Kubernetes MicroTime (RFC 3339 with microseconds).
pub fn rfc3339_micro(at: SystemTime) -> String {
    let text = rfc3339(at);
    let micros = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_micros());
    match text.strip_suffix('Z') {
        Some(seconds) => format!("{seconds}.{micros:06}Z"),
        None => text,
    }
}

/// Parses what [`rfc3339`] writes (and fractional seconds, which it drops).
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, m, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + m * 60 + s;
    u64::try_from(secs)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_662_245);
        assert_eq!(rfc3339(t), "2026-11-26T03:04:05Z");
        assert_eq!(parse_rfc3339("2026-11-26T03:04:05Z"), Some(t));
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }
}
