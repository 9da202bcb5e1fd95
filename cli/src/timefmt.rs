//! Unix seconds as UTC dates, without a date crate.

/// `2024-03-01T12:00:00Z` for `secs` seconds after the Unix epoch.
pub fn utc(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Year, month (1-12) and day (1-31) of the day `days` after 1970-01-01,
/// in the proleptic Gregorian calendar (H. Hinnant's `civil_from_days`,
/// for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01, so leap days end each 400-year era.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097; // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1st
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn known_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        // Checked against `date -u -d @<secs>`. The leap day of a year divisible by 400.
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(951_868_799), "2000-02-29T23:59:59Z");
        assert_eq!(utc(951_868_800), "2000-03-01T00:00:00Z");
        // 2100 is not a leap year: Feb 28 is followed by Mar 1.
        assert_eq!(utc(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(utc(4_107_542_400), "2100-03-01T00:00:00Z");
        assert_eq!(utc(1_709_294_400), "2024-03-01T12:00:00Z");
        assert_eq!(utc(1_735_689_599), "2024-12-31T23:59:59Z");
    }

    #[test]
    fn every_day_follows_the_previous_one() {
        // Walk 1970..2400 day by day: the date text must strictly increase
        // and the day of month either grows by one or restarts at 01.
        let mut prev = utc(0);
        for day in 1..(430 * 366) {
            let cur = utc(day * 86_400);
            assert!(cur > prev, "{prev} then {cur}");
            let (pd, cd) = (&prev[8..10], &cur[8..10]);
            let next: u32 = pd.parse::<u32>().unwrap() + 1;
            assert!(
                cd == "01" || cd.parse::<u32>().unwrap() == next,
                "{prev} then {cur}"
            );
            prev = cur;
        }
    }
}
