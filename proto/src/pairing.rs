//! Pairing codes and the pairing string, sans-IO.
//!
//! `kodama-server camera add NAME` makes a one-time **code**: 12 symbols of
//! Crockford's base32 (60 bits), shown as `XXXX-XXXX-XXXX`. Crockford's
//! alphabet has no I, L, O or U, and reading it folds `I`/`L` to `1` and `O`
//! to `0`, so a code survives being read aloud or typed in lower case.
//! 60 bits against a server that allows a few dozen guesses a minute and
//! forgets the code within the hour leaves a guesser no chance.
//!
//! The **pairing string** carries the code and the server's ticket (and, for
//! a camera that reads it from a QR code, optionally Wi-Fi credentials):
//!
//! ```text
//! kodama:pair?v=1&code=ABCD-EFGH-JKMN&server=<ticket>[&ssid=…&psk=…&country=GB]
//! ```
//!
//! Values are percent-encoded (RFC 3986 unreserved characters pass as they
//! are). Parameters may come in any order; unknown, repeated or missing ones
//! are errors that name the parameter. The whole string is at most
//! [`MAX_PAIRING_STRING`] bytes, refused before anything is decoded.

/// Symbols of a pairing code.
pub const CODE_LEN: usize = 12;

/// Crockford's base32 alphabet (no I, L, O, U).
pub const CODE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Longest pairing string accepted, in bytes (a QR code holds ~2900).
pub const MAX_PAIRING_STRING: usize = 2048;

const PREFIX: &str = "kodama:pair?";

/// Why a code or pairing string is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PairingError {
    /// Not a pairing string at all.
    #[error("not a Kodama pairing string (it starts with \"kodama:pair?\")")]
    NotPairing,
    /// Longer than [`MAX_PAIRING_STRING`].
    #[error("pairing string is {len} bytes; at most {max} are accepted")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A parameter is missing.
    #[error("pairing string has no `{0}`")]
    Missing(&'static str),
    /// A parameter appears twice or is not known.
    #[error("pairing string: unexpected parameter `{0}`")]
    Unexpected(String),
    /// A value is malformed.
    #[error("pairing string: `{field}` {reason}")]
    BadValue {
        /// The parameter.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A code has the wrong length or symbols.
    #[error("pairing code: {0}")]
    BadCode(String),
}

/// Normalises a typed code: upper case, separators dropped, Crockford's
/// look-alikes folded. Errors on anything that cannot be a code.
pub fn normalize_code(code: &str) -> Result<String, PairingError> {
    let mut out = String::with_capacity(CODE_LEN);
    for c in code.chars() {
        let c = match c.to_ascii_uppercase() {
            '-' | ' ' => continue,
            'I' | 'L' => '1',
            'O' => '0',
            c => c,
        };
        if !c.is_ascii() || !CODE_ALPHABET.contains(&(c as u8)) {
            return Err(PairingError::BadCode(format!(
                "{c:?} is not a code symbol (0-9 and A-Z without I, L, O, U)"
            )));
        }
        if out.len() == CODE_LEN {
            return Err(PairingError::BadCode(format!(
                "longer than {CODE_LEN} symbols"
            )));
        }
        out.push(c);
    }
    if out.len() != CODE_LEN {
        return Err(PairingError::BadCode(format!(
            "{} symbols; a code has {CODE_LEN}",
            out.len()
        )));
    }
    Ok(out)
}

/// A code from 60 random bits (the caller brings the randomness).
pub fn code_from_bits(bits: u64) -> String {
    (0..CODE_LEN)
        .map(|i| CODE_ALPHABET[((bits >> (5 * i)) & 31) as usize] as char)
        .collect()
}

/// `ABCDEFGHJKMN` → `ABCD-EFGH-JKMN`, for people.
pub fn format_code(code: &str) -> String {
    let chars: Vec<char> = code.chars().collect();
    chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// Wi-Fi credentials carried in a pairing QR code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WifiCredentials {
    /// Network name, 1..=32 bytes.
    pub ssid: String,
    /// WPA2 passphrase, 8..=63 characters, or empty for an open network.
    pub psk: String,
    /// Two-letter ISO 3166 country code, or empty.
    pub country: String,
}

/// What a pairing string says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairingString {
    /// The normalised code.
    pub code: String,
    /// The server's ticket (as `kodama-server run` prints it).
    pub server: String,
    /// Wi-Fi to join first, if any.
    pub wifi: Option<WifiCredentials>,
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn encode(value: &str, out: &mut String) {
    for &b in value.as_bytes() {
        if unreserved(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

fn decode(field: &'static str, value: &str) -> Result<String, PairingError> {
    let bad = |reason: &str| PairingError::BadValue {
        field,
        reason: reason.to_owned(),
    };
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| bad("has a broken %-escape"))?;
                out.push(hex);
                i += 3;
            }
            b if unreserved(b) => {
                out.push(b);
                i += 1;
            }
            _ => return Err(bad("has a character that must be %-escaped")),
        }
    }
    String::from_utf8(out).map_err(|_| bad("is not UTF-8"))
}

impl PairingString {
    /// Parses a pairing string (surrounding white space is ignored).
    pub fn parse(text: &str) -> Result<Self, PairingError> {
        let text = text.trim();
        if text.len() > MAX_PAIRING_STRING {
            return Err(PairingError::TooLong {
                len: text.len(),
                max: MAX_PAIRING_STRING,
            });
        }
        let query = text.strip_prefix(PREFIX).ok_or(PairingError::NotPairing)?;
        let (mut v, mut code, mut server, mut ssid, mut psk, mut country) =
            (None, None, None, None, None, None);
        for part in query.split('&') {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| PairingError::Unexpected(part.to_owned()))?;
            let slot = match key {
                "v" => &mut v,
                "code" => &mut code,
                "server" => &mut server,
                "ssid" => &mut ssid,
                "psk" => &mut psk,
                "country" => &mut country,
                other => return Err(PairingError::Unexpected(other.to_owned())),
            };
            if slot.is_some() {
                return Err(PairingError::Unexpected(key.to_owned()));
            }
            *slot = Some(value);
        }
        match v {
            Some("1") => {}
            Some(other) => {
                return Err(PairingError::BadValue {
                    field: "v",
                    reason: format!("is {other:?}; this software reads version 1"),
                })
            }
            None => return Err(PairingError::Missing("v")),
        }
        let code = normalize_code(&decode("code", code.ok_or(PairingError::Missing("code"))?)?)?;
        let server = decode("server", server.ok_or(PairingError::Missing("server"))?)?;
        if server.is_empty() {
            return Err(PairingError::BadValue {
                field: "server",
                reason: "is empty".into(),
            });
        }
        let wifi = match ssid {
            None => {
                if psk.is_some() || country.is_some() {
                    return Err(PairingError::Missing("ssid"));
                }
                None
            }
            Some(ssid) => {
                let w = WifiCredentials {
                    ssid: decode("ssid", ssid)?,
                    psk: psk
                        .map(|p| decode("psk", p))
                        .transpose()?
                        .unwrap_or_default(),
                    country: country
                        .map(|c| decode("country", c))
                        .transpose()?
                        .unwrap_or_default(),
                };
                w.validate()?;
                Some(w)
            }
        };
        Ok(Self { code, server, wifi })
    }
}

impl WifiCredentials {
    /// Checks the lengths Wi-Fi allows.
    pub fn validate(&self) -> Result<(), PairingError> {
        let bad = |field, reason: String| Err(PairingError::BadValue { field, reason });
        if self.ssid.is_empty() || self.ssid.len() > 32 {
            return bad(
                "ssid",
                format!("must be 1..=32 bytes, got {}", self.ssid.len()),
            );
        }
        let n = self.psk.chars().count();
        if !self.psk.is_empty() && !(8..=63).contains(&n) {
            return bad(
                "psk",
                format!("must be 8..=63 characters or empty, got {n}"),
            );
        }
        let iso_code =
            self.country.len() == 2 && self.country.chars().all(|c| c.is_ascii_uppercase());
        if !self.country.is_empty() && !iso_code {
            return bad(
                "country",
                format!("must be like \"GB\", got {:?}", self.country),
            );
        }
        Ok(())
    }
}

impl std::fmt::Display for PairingString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = String::from(PREFIX);
        s.push_str("v=1&code=");
        encode(&format_code(&self.code), &mut s);
        s.push_str("&server=");
        encode(&self.server, &mut s);
        if let Some(w) = &self.wifi {
            s.push_str("&ssid=");
            encode(&w.ssid, &mut s);
            if !w.psk.is_empty() {
                s.push_str("&psk=");
                encode(&w.psk, &mut s);
            }
            if !w.country.is_empty() {
                s.push_str("&country=");
                encode(&w.country, &mut s);
            }
        }
        f.write_str(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn codes_normalise_the_way_people_type_them() {
        assert_eq!(
            normalize_code("abcd-efgh-jkmn").as_deref(),
            Ok("ABCDEFGHJKMN")
        );
        assert_eq!(
            normalize_code("0Oo1 iIlL 2345").as_deref(),
            Ok("000111112345")
        );
        assert!(matches!(
            normalize_code("ABCD-EFGH-JKM"),
            Err(PairingError::BadCode(_))
        ));
        assert!(matches!(
            normalize_code("ABCD-EFGH-JKMNP"),
            Err(PairingError::BadCode(_))
        ));
        assert!(matches!(
            normalize_code("ABCD-EFGH-JKMU"),
            Err(PairingError::BadCode(_))
        ));
        assert_eq!(format_code("ABCDEFGHJKMN"), "ABCD-EFGH-JKMN");
        assert_eq!(code_from_bits(0), "000000000000");
        assert_eq!(code_from_bits(u64::MAX), "ZZZZZZZZZZZZ");
    }

    #[test]
    fn golden_pairing_string() {
        let p = PairingString {
            code: "ABCDEFGHJKMN".into(),
            server: "endpointabc".into(),
            wifi: Some(WifiCredentials {
                ssid: "My Home".into(),
                psk: "p&ss=word!".into(),
                country: "GB".into(),
            }),
        };
        let text = p.to_string();
        assert_eq!(
            text,
            "kodama:pair?v=1&code=ABCD-EFGH-JKMN&server=endpointabc&ssid=My%20Home&psk=p%26ss%3Dword%21&country=GB"
        );
        assert_eq!(PairingString::parse(&text), Ok(p));
    }

    #[test]
    fn bad_strings_name_what_is_wrong() {
        let ok = "kodama:pair?v=1&code=ABCD-EFGH-JKMN&server=x";
        assert!(PairingString::parse(ok).is_ok());
        assert_eq!(
            PairingString::parse("https://x"),
            Err(PairingError::NotPairing)
        );
        assert_eq!(
            PairingString::parse("kodama:pair?v=1&server=x"),
            Err(PairingError::Missing("code"))
        );
        assert!(matches!(
            PairingString::parse(&format!("{ok}&code=ABCD-EFGH-JKMN")),
            Err(PairingError::Unexpected(k)) if k == "code"
        ));
        assert!(matches!(
            PairingString::parse(&format!("{ok}&evil=1")),
            Err(PairingError::Unexpected(k)) if k == "evil"
        ));
        assert!(matches!(
            PairingString::parse("kodama:pair?v=2&code=ABCD-EFGH-JKMN&server=x"),
            Err(PairingError::BadValue { field: "v", .. })
        ));
        assert!(matches!(
            PairingString::parse(&format!("{ok}&ssid=a&psk=short")),
            Err(PairingError::BadValue { field: "psk", .. })
        ));
        assert!(matches!(
            PairingString::parse(&format!("{ok}&ssid=%zz")),
            Err(PairingError::BadValue { field: "ssid", .. })
        ));
        assert!(matches!(
            PairingString::parse(&format!("{ok}&psk=12345678")),
            Err(PairingError::Missing("ssid"))
        ));
        let long = format!("{ok}&ssid={}", "a".repeat(MAX_PAIRING_STRING));
        assert!(matches!(
            PairingString::parse(&long),
            Err(PairingError::TooLong { .. })
        ));
    }

    proptest! {
        #[test]
        fn round_trips(bits in any::<u64>(), server in "[a-z0-9]{1,200}",
                       wifi in proptest::option::of(("\\PC{1,8}", proptest::option::of("[ -~]{8,63}")))) {
            let wifi = wifi.and_then(|(ssid, psk)| {
                let w = WifiCredentials { ssid, psk: psk.unwrap_or_default(), country: String::new() };
                w.validate().is_ok().then_some(w)
            });
            let p = PairingString { code: code_from_bits(bits), server, wifi };
            prop_assert_eq!(PairingString::parse(&p.to_string()), Ok(p));
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
            let _ = PairingString::parse(&text);
            let _ = PairingString::parse(&format!("{PREFIX}{text}"));
            let _ = normalize_code(&text);
        }
    }
}
