//! Sign-In with Ethereum (EIP-4361) for `POST /auth/login`. Parsing is the
//! `siwe` crate's (Spruce's reference implementation, used without its
//! `ethers` feature); on top of it the message must be in the canonical form
//! the EIP prints (it is re-rendered and compared byte for byte, so stray
//! lines, `\r\n` or a non-blank separator line are refused), and this node
//! checks what the crate leaves to the relying party:
//!
//! - `domain` is the authority of `api.public_url`, and `URI` has its origin
//!   (scheme + authority): a phishing site relaying our nonce cannot get a
//!   message the victim's wallet shows for it accepted here;
//! - `Chain ID` is the home chain's;
//! - `Nonce` is one of ours (32 lower-case hex digits; single use is
//!   `crate::auth`'s job);
//! - `Issued At` is within `auth.signature_max_age_secs` of the server clock,
//!   `Expiration Time` (if any) is in the future, `Not Before` (if any) in the
//!   past.
//!
//! ```text
//! node.example.com wants you to sign in with your Ethereum account:
//! 0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2
//!
//! Sign in to chainfront.
//!
//! URI: https://node.example.com
//! Version: 1
//! Chain ID: 8453
//! Nonce: 00112233445566778899aabbccddeeff
//! Issued At: 2026-02-03T12:00:00Z
//! ```

use std::str::FromStr;

use alloy::primitives::Address;
use time::OffsetDateTime;

use super::{AuthError, nonce};

/// A parsed, well-formed sign-in message (its freshness not yet checked).
#[derive(Debug, Clone)]
pub struct SignIn {
    /// The address signing in.
    pub address: Address,
    /// The server nonce it consumes.
    pub nonce: String,
    message: ::siwe::Message,
}

/// What a sign-in message must name on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// `api.public_url`'s authority (host, and port if any).
    pub domain: String,
    /// `api.public_url`'s scheme + authority.
    pub origin: String,
    /// The home chain's id.
    pub chain_id: u64,
    /// How far `Issued At` may be from now, in seconds.
    pub max_age_secs: u64,
}

impl Expected {
    /// From a public URL such as `https://node.example.com` (any path ignored).
    pub fn from_public_url(public_url: &str, chain_id: u64, max_age_secs: u64) -> Self {
        let (scheme, rest) = public_url
            .split_once("://")
            .unwrap_or(("https", public_url));
        let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
        Self {
            domain: authority.to_owned(),
            origin: format!("{scheme}://{authority}"),
            chain_id,
            max_age_secs,
        }
    }
}

impl SignIn {
    /// Parses an EIP-4361 message; it must be in canonical form. Errors are
    /// 400s (a malformed request), not authentication failures.
    pub fn parse(text: &str) -> Result<Self, AuthError> {
        let message = ::siwe::Message::from_str(text).map_err(|e| {
            AuthError::Malformed(format!("message is not an EIP-4361 sign-in message: {e}"))
        })?;
        if message.to_string() != text {
            return Err(AuthError::Malformed(
                "message is not in the canonical EIP-4361 form (blank lines, line endings or extra text)"
                    .into(),
            ));
        }
        if !nonce::is_well_formed(&message.nonce) {
            return Err(AuthError::Malformed(
                "Nonce must be a nonce from GET /auth/nonce".into(),
            ));
        }
        Ok(Self {
            address: Address::from(message.address),
            nonce: message.nonce.clone(),
            message,
        })
    }

    /// Checks domain, URI, chain id and the times against `expected` at `now`
    /// (unix seconds). Every failure is a 401.
    pub fn check(&self, expected: &Expected, now: i64) -> Result<(), AuthError> {
        let m = &self.message;
        if !m.domain.to_string().eq_ignore_ascii_case(&expected.domain) {
            return Err(AuthError::Invalid(format!(
                "sign-in message is for another site; its domain must be {}",
                expected.domain
            )));
        }
        let uri = m.uri.as_str();
        let same_origin = uri.len() >= expected.origin.len()
            && uri[..expected.origin.len()].eq_ignore_ascii_case(&expected.origin)
            && matches!(
                uri.as_bytes().get(expected.origin.len()),
                None | Some(b'/' | b'?' | b'#')
            );
        if !same_origin {
            return Err(AuthError::Invalid(format!(
                "sign-in message URI must be on {}",
                expected.origin
            )));
        }
        if m.chain_id != expected.chain_id {
            return Err(AuthError::Invalid(format!(
                "sign-in message is for chain {}, this node serves chain {}",
                m.chain_id, expected.chain_id
            )));
        }
        let at = |t: &::siwe::TimeStamp| AsRef::<OffsetDateTime>::as_ref(t).unix_timestamp();
        let issued = at(&m.issued_at);
        let max_age = i64::try_from(expected.max_age_secs).unwrap_or(i64::MAX);
        if now.abs_diff(issued) > max_age.unsigned_abs() {
            return Err(AuthError::Expired(format!(
                "Issued At is more than {max_age} s from the server's time; sign a fresh message"
            )));
        }
        if let Some(exp) = &m.expiration_time
            && at(exp) <= now
        {
            return Err(AuthError::Expired(
                "sign-in message has expired (Expiration Time)".into(),
            ));
        }
        if let Some(nbf) = &m.not_before
            && at(nbf) > now
        {
            return Err(AuthError::Expired(
                "sign-in message is not valid yet (Not Before)".into(),
            ));
        }
        Ok(())
    }
}

/// Optional fields of a sign-in message built with [`message`].
#[derive(Debug, Clone, Default)]
pub struct Optional<'a> {
    /// `Expiration Time` (RFC 3339).
    pub expiration_time: Option<&'a str>,
    /// `Not Before` (RFC 3339).
    pub not_before: Option<&'a str>,
}

/// The EIP-4361 text a client signs to sign in to the node at `public_url`
/// (what the README shows; tests and the Python client build the same).
pub fn message(
    public_url: &str,
    address: Address,
    chain_id: u64,
    nonce: &str,
    issued_at: &str,
    optional: &Optional<'_>,
) -> String {
    let e = Expected::from_public_url(public_url, chain_id, 0);
    let mut m = format!(
        "{} wants you to sign in with your Ethereum account:\n{}\n\nSign in to chainfront.\n\nURI: {}\nVersion: 1\nChain ID: {chain_id}\nNonce: {nonce}\nIssued At: {issued_at}",
        e.domain,
        address.to_checksum(None),
        e.origin
    );
    if let Some(t) = optional.expiration_time {
        m.push_str(&format!("\nExpiration Time: {t}"));
    }
    if let Some(t) = optional.not_before {
        m.push_str(&format!("\nNot Before: {t}"));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &str = "00112233445566778899aabbccddeeff";

    /// The EIP-4361 specification's example message (nonce replaced by one
    /// of ours, as this node only accepts its own).
    fn eip_example(nonce: &str) -> String {
        format!(
            "example.com wants you to sign in with your Ethereum account:\n0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2\n\nI accept the ExampleOrg Terms of Service: https://example.com/tos\n\nURI: https://example.com/login\nVersion: 1\nChain ID: 1\nNonce: {nonce}\nIssued At: 2021-09-30T16:25:24Z\nResources:\n- ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/\n- https://example.com/my-web2-claim.json"
        )
    }

    fn expected() -> Expected {
        Expected::from_public_url("https://example.com", 1, 300)
    }

    fn unix(s: &str) -> i64 {
        OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .expect("time")
            .unix_timestamp()
    }

    #[test]
    fn the_eips_example_parses_and_checks() {
        let text = eip_example(NONCE);
        let s = SignIn::parse(&text).expect("parses");
        assert_eq!(
            s.address,
            "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2"
                .parse::<Address>()
                .expect("addr")
        );
        assert_eq!(s.nonce, NONCE);
        s.check(&expected(), unix("2021-09-30T16:26:00Z"))
            .expect("valid a minute later");
        // The EIP's own nonce (`32891756`) is well-formed EIP-4361 but not one
        // of this node's nonces.
        assert!(matches!(
            SignIn::parse(&eip_example("32891756")),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn domain_uri_chain_and_times_are_checked() {
        let who: Address = "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2"
            .parse()
            .expect("addr");
        let now = unix("2026-02-03T12:00:30Z");
        let ok = |m: &str| SignIn::parse(m).expect("parses").check(&expected(), now);
        let build = |url: &str, chain: u64, opt: &Optional<'_>| {
            message(url, who, chain, NONCE, "2026-02-03T12:00:00Z", opt)
        };
        ok(&build("https://example.com", 1, &Optional::default())).expect("valid");
        ok(&build("https://example.com/", 1, &Optional::default())).expect("trailing slash");
        for (m, why) in [
            (
                build("https://evil.example", 1, &Optional::default()),
                "domain",
            ),
            (
                build("https://example.com.evil", 1, &Optional::default()),
                "domain",
            ),
            (
                build("http://example.com", 1, &Optional::default()),
                "scheme",
            ),
            (
                build("https://example.com", 8453, &Optional::default()),
                "chain",
            ),
        ] {
            assert!(matches!(ok(&m), Err(AuthError::Invalid(_))), "{why}: {m}");
        }
        // Same domain, URI on another origin.
        let other_uri = build("https://example.com", 1, &Optional::default())
            .replace("URI: https://example.com", "URI: https://example.com.evil");
        assert!(matches!(ok(&other_uri), Err(AuthError::Invalid(_))));
        let expired = Optional {
            expiration_time: Some("2026-02-03T12:00:10Z"),
            ..Optional::default()
        };
        assert!(matches!(
            ok(&build("https://example.com", 1, &expired)),
            Err(AuthError::Expired(_))
        ));
        let not_yet = Optional {
            not_before: Some("2026-02-03T13:00:00Z"),
            ..Optional::default()
        };
        assert!(matches!(
            ok(&build("https://example.com", 1, &not_yet)),
            Err(AuthError::Expired(_))
        ));
        let stale = message(
            "https://example.com",
            who,
            1,
            NONCE,
            "2026-02-03T11:00:00Z",
            &Optional::default(),
        );
        assert!(matches!(ok(&stale), Err(AuthError::Expired(_))));
    }

    #[test]
    fn anything_but_the_canonical_form_is_refused() {
        let who = Address::repeat_byte(0xAB);
        let good = message(
            "https://example.com",
            who,
            1,
            NONCE,
            "2026-02-03T12:00:00Z",
            &Optional::default(),
        );
        SignIn::parse(&good).expect("good");
        let cases = [
            format!("{good}\n"),
            good.replace('\n', "\r\n"),
            good.replacen("\n\n", "\nX\n", 1),
            good.replace(&who.to_checksum(None), &format!("{who:#x}")),
            good.replace(NONCE, &NONCE.to_uppercase()),
            good.replace("Version: 1", "Version: 2"),
            good.replace("2026-02-03T12:00:00Z", "yesterday"),
            "chainfront sign-in\nAddress: 0x00\nNonce: x\nIssued At: now".to_owned(),
            String::new(),
        ];
        for m in cases {
            assert!(
                matches!(SignIn::parse(&m), Err(AuthError::Malformed(_))),
                "{m:?}"
            );
        }
    }
}
