//! Bearer tokens: read from the environment variables the config names, kept only as
//! SHA-256 digests, compared in constant time (the presented token is hashed and
//! compared with every digest, without stopping at a match, so neither the comparison
//! nor the number of tokens leaks through timing).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use roundtrip_core::model::listen::TokenSources;

/// The shortest token accepted: 16 bytes (128 bits, e.g. `openssl rand -hex 16`).
pub const MIN_TOKEN_LEN: usize = 16;

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// No valid token.
    None,
    /// A read token: runs, observations, streams, metrics.
    Read,
    /// An admin token: also retention.
    Admin,
}

/// The tokens of one service, as digests.
#[derive(Clone)]
pub struct Tokens {
    read: Vec<[u8; 32]>,
    admin: Vec<[u8; 32]>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("read", &self.read.len())
            .field("admin", &self.admin.len())
            .finish()
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl Tokens {
    /// No tokens: an open API, which the config allows on loopback only.
    pub fn none() -> Tokens {
        Tokens {
            read: Vec::new(),
            admin: Vec::new(),
        }
    }

    /// Reads the tokens from the variables `sources` names, through `lookup` (the
    /// environment); a variable that is unset, empty or shorter than
    /// [`MIN_TOKEN_LEN`] is an error that names it (never its value).
    pub fn from_sources(
        sources: &TokenSources,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Tokens, String> {
        let read = |names: &[String]| {
            names
                .iter()
                .map(|name| match lookup(name) {
                    None => Err(format!(
                        "the token variable `{name}` is not set; set it to a secret of at \
                         least {MIN_TOKEN_LEN} characters (e.g. `openssl rand -hex 32`)"
                    )),
                    Some(v) if v.trim().len() < MIN_TOKEN_LEN => Err(format!(
                        "the token in `{name}` is shorter than {MIN_TOKEN_LEN} characters; \
                         use a long random secret (e.g. `openssl rand -hex 32`)"
                    )),
                    Some(v) => Ok(digest(v.trim().as_bytes())),
                })
                .collect::<Result<Vec<_>, String>>()
        };
        Ok(Tokens {
            read: read(&sources.read)?,
            admin: read(&sources.admin)?,
        })
    }

    /// Whether any token is configured (otherwise the API is open: loopback only).
    pub fn any(&self) -> bool {
        !self.read.is_empty() || !self.admin.is_empty()
    }

    /// What the `Authorization` header value allows.
    pub fn check(&self, authorization: Option<&[u8]>) -> Access {
        let Some(token) = authorization.and_then(bearer) else {
            return Access::None;
        };
        let presented = digest(token);
        let matches = |set: &[[u8; 32]]| {
            set.iter().fold(subtle::Choice::from(0), |found, d| {
                found | d.ct_eq(&presented)
            })
        };
        let (admin, read) = (matches(&self.admin), matches(&self.read));
        if bool::from(admin) {
            Access::Admin
        } else if bool::from(read) {
            Access::Read
        } else {
            Access::None
        }
    }
}

/// The token of `Bearer TOKEN` (the scheme case-insensitive, as RFC 9110 says).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    (scheme.eq_ignore_ascii_case(b"bearer ") && !rest.is_empty()).then_some(rest.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    const READ: &str = "read-token-0123456789";
    const ADMIN: &str = "admin-token-0123456789";

    fn tokens() -> Tokens {
        let sources = TokenSources {
            read: vec!["R".to_owned()],
            admin: vec!["A".to_owned()],
        };
        Tokens::from_sources(&sources, |name| match name {
            "R" => Some(READ.to_owned()),
            "A" => Some(ADMIN.to_owned()),
            _ => None,
        })
        .expect("tokens")
    }

    #[test]
    fn each_token_gets_its_access_and_nothing_else_gets_any() {
        let t = tokens();
        let check = |h: &str| t.check(Some(h.as_bytes()));
        assert_eq!(check(&format!("Bearer {READ}")), Access::Read);
        assert_eq!(check(&format!("bearer {ADMIN}")), Access::Admin);
        for wrong in [
            String::new(),
            READ.to_owned(),
            format!("Basic {READ}"),
            format!("Bearer {READ}x"),
            format!("Bearer {}", &READ[1..]),
            "Bearer ".to_owned(),
        ] {
            assert_eq!(check(&wrong), Access::None, "{wrong:?}");
        }
        assert_eq!(t.check(None), Access::None);
    }

    #[test]
    fn unset_or_short_tokens_are_refused_by_name_never_by_value() {
        let sources = TokenSources {
            read: vec!["RT_SHORT".to_owned()],
            admin: Vec::new(),
        };
        let e =
            Tokens::from_sources(&sources, |_| Some("tiny-secret".to_owned())).expect_err("short");
        assert!(
            e.contains("`RT_SHORT`") && !e.contains("tiny-secret"),
            "{e}"
        );
        let e = Tokens::from_sources(&sources, |_| None).expect_err("unset");
        assert!(e.contains("is not set"), "{e}");
    }

    #[test]
    fn the_debug_form_shows_no_digest() {
        assert_eq!(format!("{:?}", tokens()), "Tokens { read: 1, admin: 1 }");
    }
}
