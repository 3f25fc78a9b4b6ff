//! Sign-in tokens: HS256 JWTs with the algorithm pinned. Verification accepts
//! exactly HS256 under this node's secret (at least [`MIN_SECRET_LEN`] bytes),
//! issuer `chainfront`, audience `chainfront:<chain id>:<domain>` (so a token
//! from a testnet deployment or another operator's node that happens to share
//! the secret is refused), with `sub` (the EIP-55 checksummed address), `iat`
//! and `exp` present; a token whose header names another algorithm (`none`,
//! HS384, RS256, ...) is refused before any key is used. Revocation (a
//! per-address "not before") is checked by `crate::auth`, which owns Redis.

use alloy::primitives::Address;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The `iss` of every token this node issues and the only one it accepts.
pub const ISSUER: &str = "chainfront";
/// Shortest HMAC secret accepted: HS256 tokens are known plaintext, so a
/// short secret can be brute-forced offline.
pub const MIN_SECRET_LEN: usize = 32;
/// Clock skew tolerated on `exp`, in seconds (replicas share NTP time).
const LEEWAY_SECS: u64 = 5;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Past its `exp`.
    #[error("token expired; sign in again (POST /auth/login)")]
    Expired,
    /// Wrong algorithm, bad signature, wrong issuer or audience, missing
    /// claim or not a JWT.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token could not be signed (only with an unusable key).
    #[error("could not sign a token: {0}")]
    Signing(String),
}

/// The claims of a sign-in token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The signed-in wallet, EIP-55 checksummed.
    pub sub: String,
    /// `chainfront:<chain id>:<domain>`.
    pub aud: String,
    /// Issued at, unix seconds.
    pub iat: u64,
    /// Expires at, unix seconds.
    pub exp: u64,
    /// Always [`ISSUER`].
    pub iss: String,
}

/// A token handed to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The compact JWT.
    pub token: String,
    /// Its `exp`, unix seconds.
    pub expires_at: u64,
}

/// A verified token: who, and when it was issued (for revocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The wallet it was issued to.
    pub address: Address,
    /// Its `iat`.
    pub issued_at: u64,
}

/// The audience of this node's tokens.
pub fn audience(chain_id: u64, domain: &str) -> String {
    format!("chainfront:{chain_id}:{domain}")
}

/// The node's JWT keys and pinned validation rules.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    audience: String,
    ttl_secs: u64,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("secret", &"<redacted>")
            .field("audience", &self.audience)
            .field("ttl_secs", &self.ttl_secs)
            .finish()
    }
}

impl JwtKeys {
    /// Keys from the HMAC `secret` for tokens of `audience`; issued tokens
    /// live `ttl_secs`. A secret shorter than [`MIN_SECRET_LEN`] is refused.
    pub fn new(secret: &[u8], audience: &str, ttl_secs: u64) -> Result<Self, JwtError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(JwtError::Signing(format!(
                "the JWT secret must be at least {MIN_SECRET_LEN} bytes"
            )));
        }
        // `Validation::new` allows exactly the one algorithm given.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "sub", "aud"]);
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            audience: audience.to_owned(),
            ttl_secs: ttl_secs.max(1),
        })
    }

    /// A token for `address`, issued at `now` (unix seconds).
    pub fn issue(&self, address: Address, now: u64) -> Result<IssuedToken, JwtError> {
        let claims = Claims {
            sub: address.to_checksum(None),
            aud: self.audience.clone(),
            iat: now,
            exp: now.saturating_add(self.ttl_secs),
            iss: ISSUER.into(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| JwtError::Signing(e.to_string()))?;
        Ok(IssuedToken {
            token,
            expires_at: claims.exp,
        })
    }

    /// The wallet a valid token was issued to, and when.
    pub fn verify(&self, token: &str) -> Result<Verified, JwtError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => JwtError::Expired,
                ErrorKind::InvalidAlgorithm => {
                    JwtError::Invalid("only HS256 tokens from this node are accepted".into())
                }
                ErrorKind::InvalidSignature => JwtError::Invalid("bad signature".into()),
                ErrorKind::InvalidIssuer => JwtError::Invalid("wrong issuer".into()),
                ErrorKind::InvalidAudience => {
                    JwtError::Invalid("token is for another node or chain (audience)".into())
                }
                ErrorKind::MissingRequiredClaim(c) => {
                    JwtError::Invalid(format!("missing claim `{c}`"))
                }
                _ => JwtError::Invalid("malformed token".into()),
            })?;
        let sub = data.claims.sub;
        let address: Address = sub
            .parse()
            .map_err(|_| JwtError::Invalid("subject is not an address".into()))?;
        // Only the exact form this node writes: one token, one spelling.
        if sub != address.to_checksum(None) {
            return Err(JwtError::Invalid(
                "subject is not a checksummed address".into(),
            ));
        }
        Ok(Verified {
            address,
            issued_at: data.claims.iat,
        })
    }
}

/// Whether a bearer value has a JWT's shape (three dot-separated parts); a
/// hex signature never contains a dot.
pub fn looks_like_jwt(bearer: &str) -> bool {
    bearer.split('.').count() == 3
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret-of-at-least-32-bytes!!";

    fn now() -> u64 {
        crate::auth::nonce::unix_now()
    }

    /// RFC 4648 base64url without padding, for hand-made tokens.
    fn b64url(data: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..=chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            }
        }
        out
    }

    const AUD: &str = "chainfront:31337:node.example";

    fn keys() -> JwtKeys {
        JwtKeys::new(SECRET, AUD, 3600).expect("keys")
    }

    fn claims(address: Address, iat: u64, exp: u64) -> Claims {
        Claims {
            sub: address.to_checksum(None),
            aud: AUD.into(),
            iat,
            exp,
            iss: ISSUER.into(),
        }
    }

    #[test]
    fn b64url_matches_rfc4648() {
        assert_eq!(b64url(b"f"), "Zg");
        assert_eq!(b64url(b"fo"), "Zm8");
        assert_eq!(b64url(b"foo"), "Zm9v");
        assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(JwtKeys::new(b"short", AUD, 60).is_err());
        assert!(JwtKeys::new(&[7u8; 31], AUD, 60).is_err());
        assert!(JwtKeys::new(&[7u8; 32], AUD, 60).is_ok());
    }

    #[test]
    fn another_audience_is_refused() {
        let who = Address::repeat_byte(0xAB);
        let testnet = JwtKeys::new(SECRET, "chainfront:84532:node.example", 3600).expect("keys");
        let token = testnet.issue(who, now()).expect("issue").token;
        assert_eq!(
            keys().verify(&token),
            Err(JwtError::Invalid(
                "token is for another node or chain (audience)".into()
            ))
        );
        let mut no_aud = serde_json::to_value(claims(who, now(), now() + 60)).expect("json");
        no_aud.as_object_mut().expect("object").remove("aud");
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &no_aud,
            &EncodingKey::from_secret(SECRET),
        )
        .expect("encode");
        assert!(matches!(keys().verify(&token), Err(JwtError::Invalid(_))));
    }

    #[test]
    fn issued_tokens_verify_to_the_checksummed_address() {
        let keys = keys();
        let who = Address::repeat_byte(0xAB);
        let issued = keys.issue(who, now()).expect("issue");
        assert!(looks_like_jwt(&issued.token));
        let verified = keys.verify(&issued.token).expect("verify");
        assert_eq!(verified.address, who);
        assert!(verified.issued_at <= now());
        let payload = issued.token.split('.').nth(1).expect("payload");
        assert!(payload.len() > 10);
        assert!(issued.expires_at >= now() + 3599);
    }

    #[test]
    fn alg_none_is_rejected() {
        let keys = keys();
        let body =
            serde_json::to_vec(&claims(Address::repeat_byte(1), now(), now() + 600)).expect("json");
        for header in [
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"None","typ":"JWT"}"#,
        ] {
            let token = format!("{}.{}.", b64url(header.as_bytes()), b64url(&body));
            assert!(looks_like_jwt(&token));
            assert!(
                matches!(keys.verify(&token), Err(JwtError::Invalid(_))),
                "{header}"
            );
        }
    }

    #[test]
    fn other_algorithms_are_rejected_even_with_the_right_secret() {
        let keys = keys();
        let c = claims(Address::repeat_byte(1), now(), now() + 600);
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            let token =
                jsonwebtoken::encode(&Header::new(alg), &c, &EncodingKey::from_secret(SECRET))
                    .expect("encode");
            assert_eq!(
                keys.verify(&token),
                Err(JwtError::Invalid(
                    "only HS256 tokens from this node are accepted".into()
                )),
                "{alg:?}"
            );
        }
    }

    #[test]
    fn wrong_secret_expired_and_foreign_tokens_are_rejected() {
        let keys = keys();
        let who = Address::repeat_byte(7);
        let forged = JwtKeys::new(b"another-secret-another-secret-xx", AUD, 3600)
            .expect("keys")
            .issue(who, now())
            .expect("issue");
        assert_eq!(
            keys.verify(&forged.token),
            Err(JwtError::Invalid("bad signature".into()))
        );

        let old = keys.issue(who, now() - 7200).expect("issue");
        assert_eq!(keys.verify(&old.token), Err(JwtError::Expired));

        let foreign = |c: &Claims| {
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                c,
                &EncodingKey::from_secret(SECRET),
            )
            .expect("encode")
        };
        let mut other_issuer = claims(who, now(), now() + 600);
        other_issuer.iss = "someone-else".into();
        assert_eq!(
            keys.verify(&foreign(&other_issuer)),
            Err(JwtError::Invalid("wrong issuer".into()))
        );
        let mut lower = claims(who, now(), now() + 600);
        lower.sub = format!("{:#x}", Address::repeat_byte(0xAB));
        assert!(matches!(
            keys.verify(&foreign(&lower)),
            Err(JwtError::Invalid(_))
        ));
        let mut junk_sub = claims(who, now(), now() + 600);
        junk_sub.sub = "root".into();
        assert!(matches!(
            keys.verify(&foreign(&junk_sub)),
            Err(JwtError::Invalid(_))
        ));
        // A token without `iat` (or any required claim) is refused.
        let no_iat = serde_json::json!({"sub": who.to_checksum(None), "aud": AUD, "exp": now() + 600, "iss": ISSUER});
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &no_iat,
            &EncodingKey::from_secret(SECRET),
        )
        .expect("encode");
        assert!(matches!(keys.verify(&token), Err(JwtError::Invalid(_))));
        // Tampering with the payload breaks the signature.
        let good = keys.issue(who, now()).expect("issue").token;
        let mut parts: Vec<&str> = good.split('.').collect();
        let evil = b64url(
            &serde_json::to_vec(&claims(Address::repeat_byte(9), now(), now() + 600))
                .expect("json"),
        );
        parts[1] = &evil;
        assert!(keys.verify(&parts.join(".")).is_err());
        assert!(keys.verify("not-a-token").is_err());
        assert!(!looks_like_jwt(&format!("0x{}", "ab".repeat(65))));
    }
}
