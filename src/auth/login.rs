//! The wallet sign-in message of `POST /auth/login` (SIWE-like, shorter). It
//! is exactly four lines joined by `\n`, no trailing newline:
//!
//! ```text
//! chainfront sign-in
//! Address: {address}
//! Nonce: {nonce}
//! Issued At: {issued_at}
//! ```
//!
//! `address` is the `0x` address signing in (any letter case), `nonce` a
//! nonce from `GET /auth/nonce` (32 lower-case hex digits) and `issued_at` an
//! RFC 3339 timestamp (e.g. `2026-02-03T12:00:00Z` or JavaScript's
//! `toISOString()`), within `auth.signature_max_age_secs` of the server clock.

use alloy::primitives::Address;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::nonce;

/// First line of every sign-in message.
pub const SIGN_IN_HEADER: &str = "chainfront sign-in";

/// A parsed sign-in message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignIn {
    /// The address signing in.
    pub address: Address,
    /// The server nonce it consumes.
    pub nonce: String,
    /// When the client made it, unix seconds.
    pub issued_at: i64,
}

impl SignIn {
    /// The exact message for these values (what a client signs).
    pub fn message(address: Address, nonce: &str, issued_at: &str) -> String {
        format!("{SIGN_IN_HEADER}\nAddress: {address}\nNonce: {nonce}\nIssued At: {issued_at}")
    }

    /// Parses `message`; the error says which line is wrong.
    pub fn parse(message: &str) -> Result<Self, String> {
        let expected = format!(
            "sign-in message must be exactly \"{SIGN_IN_HEADER}\\nAddress: {{address}}\\nNonce: {{nonce}}\\nIssued At: {{RFC 3339 time}}\""
        );
        let lines: Vec<&str> = message.split('\n').collect();
        let [header, address, nonce, issued_at] = lines.as_slice() else {
            return Err(expected);
        };
        if *header != SIGN_IN_HEADER {
            return Err(expected);
        }
        let address = address
            .strip_prefix("Address: ")
            .ok_or_else(|| format!("line 2: {expected}"))?
            .parse::<Address>()
            .map_err(|_| "line 2: Address is not a 0x address".to_owned())?;
        let nonce = nonce
            .strip_prefix("Nonce: ")
            .ok_or_else(|| format!("line 3: {expected}"))?;
        if !nonce::is_well_formed(nonce) {
            return Err("line 3: Nonce must be a nonce from GET /auth/nonce".into());
        }
        let issued_at = issued_at
            .strip_prefix("Issued At: ")
            .ok_or_else(|| format!("line 4: {expected}"))?;
        let issued_at = OffsetDateTime::parse(issued_at, &Rfc3339)
            .map_err(|_| "line 4: Issued At must be an RFC 3339 time".to_owned())?
            .unix_timestamp();
        Ok(Self {
            address,
            nonce: nonce.to_owned(),
            issued_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &str = "00112233445566778899aabbccddeeff";

    #[test]
    fn parses_the_documented_message() {
        let who = Address::repeat_byte(0xAB);
        let m = SignIn::message(who, NONCE, "2026-02-03T12:00:00Z");
        assert_eq!(
            m,
            format!(
                "chainfront sign-in\nAddress: {}\nNonce: {NONCE}\nIssued At: 2026-02-03T12:00:00Z",
                who.to_checksum(None)
            )
        );
        let parsed = SignIn::parse(&m).expect("parse");
        assert_eq!(parsed.address, who);
        assert_eq!(parsed.nonce, NONCE);
        assert_eq!(parsed.issued_at, 1_770_120_000);
        // Lower-case addresses and JavaScript's toISOString() are fine.
        let js = format!(
            "chainfront sign-in\nAddress: {who:#x}\nNonce: {NONCE}\nIssued At: 2026-02-03T12:00:00.123Z"
        );
        assert_eq!(SignIn::parse(&js).expect("js").issued_at, 1_770_120_000);
    }

    #[test]
    fn anything_else_is_refused() {
        let who = Address::repeat_byte(0xAB);
        let good = SignIn::message(who, NONCE, "2026-02-03T12:00:00Z");
        let cases = [
            format!("{good}\n"),
            good.replace('\n', "\r\n"),
            good.replace("chainfront sign-in", "chainfront sign in"),
            good.replace("Address: ", "Address:"),
            good.replace(&who.to_checksum(None), "0x1234"),
            good.replace(NONCE, &NONCE.to_uppercase()),
            good.replace(NONCE, "abc"),
            good.replace("2026-02-03T12:00:00Z", "yesterday"),
            good.replace("Issued At", "Issued at"),
            String::new(),
        ];
        for m in cases {
            assert!(SignIn::parse(&m).is_err(), "{m:?}");
        }
    }
}
