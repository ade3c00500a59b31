//! The built-in detectors: one function per kind of personal data, each deciding on a whole
//! value (a field holding "mail me at a@b.co" is not an email field). Regular expressions are
//! compiled once per process.

use regex::Regex;
use std::net::IpAddr;
use std::sync::LazyLock;

/// Longest value the value detectors look at: every detected kind is far shorter (an email
/// address is at most 254 bytes), and a long text is not one of them as a whole.
pub const DETECT_VALUE_BYTES_MAX: usize = 320;
/// Longest email address (RFC 5321's path limit).
pub const EMAIL_BYTES_MAX: usize = 254;
/// Digits of a card-like number (ISO/IEC 7812 primary account numbers).
pub const CARD_DIGITS_MIN: usize = 13;
pub const CARD_DIGITS_MAX: usize = 19;
/// Digits of a phone number written with a leading `+` (E.164: at most 15; 8 excludes short
/// codes and most non-phone `+n` values).
pub const PHONE_INTERNATIONAL_DIGITS_MIN: usize = 8;
pub const PHONE_DIGITS_MAX: usize = 15;
/// Digits of a phone number without `+`, accepted only in a field named like a phone field.
pub const PHONE_NATIONAL_DIGITS_MIN: usize = 7;

/// Field names that hold a person's name, under `traits` and `context.traits` (`name` counts
/// there: Segment's reserved trait is the person's full name).
pub const NAME_TRAIT_KEYS: &[&str] = &[
    "name",
    "firstName",
    "lastName",
    "first_name",
    "last_name",
    "fullName",
    "full_name",
    "middleName",
    "middle_name",
    "maidenName",
    "maiden_name",
];
/// Field names that hold a phone number wherever they are (then national formats count too).
pub const PHONE_KEYS: &[&str] = &[
    "phone",
    "phoneNumber",
    "phone_number",
    "mobile",
    "mobilePhone",
    "mobile_phone",
    "telephone",
];

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$")
        .expect("email pattern")
});

/// One national id format: its kind, its pattern, and a check the pattern cannot express.
type NationalIdFormat = (&'static str, Regex, fn(&str) -> bool);

/// National identity numbers recognised by value. The kinds are documented in the crate's doc
/// comment.
static NATIONAL_IDS: LazyLock<Vec<NationalIdFormat>> = LazyLock::new(|| {
    vec![
        // US Social Security number: area 001–899 but not 666, group 01–99, serial 0001–9999.
        (
            "us_ssn",
            Regex::new(r"^(\d{3})-(\d{2})-(\d{4})$").expect("ssn pattern"),
            us_ssn_ranges as fn(&str) -> bool,
        ),
        // UK National Insurance number: two letters (not D, F, I, Q, U, V; O not second), six
        // digits, a suffix A–D; spaces allowed between pairs.
        (
            "uk_nino",
            Regex::new(r"^[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]$")
                .expect("nino pattern"),
            |_| true,
        ),
        // French social security number (NIR): sex, year, month, department, commune, order,
        // then a key = 97 − (the 13 digits mod 97); Corsica's 2A/2B count as 19/18.
        (
            "fr_nir",
            Regex::new(r"^[12] ?\d{2} ?\d{2} ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}$")
                .expect("nir pattern"),
            fr_nir_key as fn(&str) -> bool,
        ),
    ]
});

/// A whole-value email address.
pub fn is_email(value: &str) -> bool {
    value.len() <= EMAIL_BYTES_MAX && EMAIL.is_match(value)
}

/// A whole-value IPv4 or IPv6 address.
pub fn ip_address(value: &str) -> Option<IpAddr> {
    value.parse().ok()
}

/// A card-like number: 13–19 digits, single spaces or dashes between groups allowed, passing
/// the Luhn check, not one digit repeated.
pub fn is_card(value: &str) -> bool {
    let bytes = value.as_bytes();
    if !bytes.first().is_some_and(u8::is_ascii_digit)
        || !bytes.last().is_some_and(u8::is_ascii_digit)
    {
        return false;
    }
    let mut previous_separator = false;
    for &byte in bytes {
        match byte {
            b'0'..=b'9' => previous_separator = false,
            b' ' | b'-' if !previous_separator => previous_separator = true,
            _ => return false,
        }
    }
    let digits: Vec<u8> = bytes
        .iter()
        .filter(|byte| byte.is_ascii_digit())
        .map(|byte| byte - b'0')
        .collect();
    (CARD_DIGITS_MIN..=CARD_DIGITS_MAX).contains(&digits.len())
        && digits.iter().any(|digit| *digit != digits[0])
        && luhn(&digits)
}

/// The Luhn checksum (ISO/IEC 7812-1) over digits 0–9.
pub fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(index, &digit)| {
            let digit = u32::from(digit);
            if index % 2 == 1 {
                let doubled = digit * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                digit
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Which national id `value` is, if any (`us_ssn`, `uk_nino`, `fr_nir`).
pub fn national_id(value: &str) -> Option<&'static str> {
    NATIONAL_IDS
        .iter()
        .find(|(_, pattern, check)| pattern.is_match(value) && check(value))
        .map(|(kind, _, _)| *kind)
}

fn us_ssn_ranges(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let [area, group, serial] = parts[..] else {
        return false;
    };
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

fn fr_nir_key(value: &str) -> bool {
    let compact: String = value.chars().filter(|c| *c != ' ').collect();
    let (body, key) = compact.split_at(13);
    // Corsica: 2A → 19, 2B → 18 in the number the key is computed on.
    let body = body.replace("2A", "19").replace("2B", "18");
    let (Ok(body), Ok(key)) = (body.parse::<u64>(), key.parse::<u64>()) else {
        return false;
    };
    97 - body % 97 == key
}

/// A phone number: digits with spaces, dashes, dots or parentheses; with a leading `+`,
/// 8–15 digits; without, only when the field is named like a phone field (`by_key`), 7–15.
pub fn is_phone(value: &str, by_key: bool) -> bool {
    let (international, rest) = match value.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    if !international && !by_key {
        return false;
    }
    if !rest.starts_with(|c: char| c.is_ascii_digit() || c == '(') {
        return false;
    }
    let mut digits = 0;
    for c in rest.chars() {
        match c {
            '0'..='9' => digits += 1,
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return false,
        }
    }
    let min = if international {
        PHONE_INTERNATIONAL_DIGITS_MIN
    } else {
        PHONE_NATIONAL_DIGITS_MIN
    };
    (min..=PHONE_DIGITS_MAX).contains(&digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        for yes in ["jane@example.com", "j.doe+tag@mail.example.co.uk", "a@b.io"] {
            assert!(is_email(yes), "{yes}");
        }
        for no in [
            "jane",
            "jane@",
            "@example.com",
            "jane@example",
            "mail me at jane@example.com",
            "jane@exa mple.com",
            "jane@-example.com",
            "",
        ] {
            assert!(!is_email(no), "{no}");
        }
        assert!(!is_email(&format!("{}@example.com", "a".repeat(250))));
    }

    #[test]
    fn ip_addresses() {
        assert!(ip_address("192.168.1.20").is_some());
        assert!(ip_address("2001:db8::1").is_some());
        for no in ["1.2.3", "1.2.3.256", "version 1.2.3.4", "localhost", "12"] {
            assert!(ip_address(no).is_none(), "{no}");
        }
    }

    #[test]
    fn cards_pass_luhn() {
        for yes in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "378282246310005",
            "6011000990139424",
            "4222222222222",
        ] {
            assert!(is_card(yes), "{yes}");
        }
    }

    #[test]
    fn card_negatives() {
        for no in [
            "4111111111111112",     // Luhn fails
            "4111  1111 1111 1111", // two separators in a row
            "411111111111",         // 12 digits
            "41111111111111111111", // 20 digits
            "0000000000000000",     // one digit repeated (passes Luhn)
            "4111111111111111 ",    // trailing space
            "-4111111111111111",    // leading dash
            "4111.1111.1111.1111",  // dots are not card separators
            "ABCD111111111111",
            "1733615470000a",
        ] {
            assert!(!is_card(no), "{no}");
        }
    }

    #[test]
    fn luhn_checksum() {
        let digits = |text: &str| text.bytes().map(|b| b - b'0').collect::<Vec<_>>();
        assert!(luhn(&digits("79927398713")));
        assert!(!luhn(&digits("79927398710")));
    }

    #[test]
    fn national_ids() {
        assert_eq!(national_id("123-45-6789"), Some("us_ssn"));
        assert_eq!(national_id("AB 12 34 56 C"), Some("uk_nino"));
        assert_eq!(national_id("AB123456C"), Some("uk_nino"));
        // 1 84 12 76 451 089 key 46: 97 - (1841276451089 mod 97) = 46.
        assert_eq!(national_id("1 84 12 76 451 089 46"), Some("fr_nir"));
        assert_eq!(national_id("184127645108946"), Some("fr_nir"));
        for no in [
            "000-12-3456",
            "666-12-3456",
            "912-12-3456",
            "123-00-4567",
            "123-45-0000",
            "123456789",
            "DA123456C",       // D is not a first letter
            "AB123456E",       // suffix A–D only
            "184127645108947", // wrong key
            "2026-12-07",
        ] {
            assert_eq!(national_id(no), None, "{no}");
        }
    }

    #[test]
    fn phones() {
        assert!(is_phone("+33612345689", false));
        assert!(is_phone("+1 (555) 123-4567", false));
        assert!(is_phone("+44 20 7946 0958", false));
        assert!(
            is_phone("06 12 34 56 89", true),
            "national, in a phone field"
        );
        assert!(!is_phone("06 12 34 56 89", false), "national elsewhere");
        for no in ["+1234", "+33 6 12 x4", "+", "+1234567890123456", "phone"] {
            assert!(!is_phone(no, true), "{no}");
        }
    }
}
