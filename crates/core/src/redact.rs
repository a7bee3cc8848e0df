//! Hiding secrets that URLs carry (`user:password@`, `?token=…`) before a URL, or an error
//! message that quotes one, is printed, reported or stored.
//!
//! Suite files keep secrets out of URLs where they can (credentials come from environment
//! variables a channel names), but a URL may still hold one: an `http` channel's
//! `?api_key=` or a broker URL with a password, both often rendered from `env()`. Client
//! libraries quote the URL in their errors ("error sending request for url (…)"), so
//! every send error and harness error passes through [`text()`] before it is shown or
//! recorded.

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// The URL with its password (or a lone userinfo, often a token) and the values of
/// query parameters that carry secrets masked: `amqp://guest:***@host/vhost`,
/// `https://h/p?token=***&page=2`. A parameter carries a secret when its name contains
/// `token`, `key`, `secret`, `pass`, `pwd`, `auth`, `sig`, `cred`, `session` or `code`
/// (any case: `api_key`, `X-Amz-Signature`, `access_token`); other values (`ttl`,
/// `region`, `page`) are kept so that errors stay readable. A text without `://` is
/// treated as an authority and path (`user:pw@host:port`).
pub fn url(url: &str) -> String {
    if let Some(masked) = unparsable_with_userinfo(url) {
        return masked;
    }
    let (url, fragment) = match url.split_once('#') {
        Some((u, f)) => (u, Some(f)),
        None => (url, None),
    };
    let (url, query) = match url.split_once('?') {
        Some((u, q)) => (u, Some(q)),
        None => (url, None),
    };
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:{MASK}@{host}"),
            None => format!("{MASK}@{host}"),
        },
        None => authority.to_owned(),
    };
    let mut out = match scheme {
        Some(scheme) => format!("{scheme}://{authority}{path}"),
        None => format!("{authority}{path}"),
    };
    if let Some(query) = query {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if is_secret_name(key) => format!("{key}={MASK}"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    if fragment.is_some() {
        out.push('#');
        out.push_str(MASK);
    }
    out
}

/// Whether a query parameter's name says it carries a secret.
fn is_secret_name(name: &str) -> bool {
    const SECRET: [&str; 10] = [
        "token", "key", "secret", "pass", "pwd", "auth", "sig", "cred", "session", "code",
    ];
    let name = name.to_ascii_lowercase();
    SECRET.iter().any(|s| name.contains(s))
}

/// `text` with every URL in it (`scheme://…`, up to whitespace, a quote, a bracket or
/// `>`) passed through [`url()`].
pub fn text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let scheme_start = rest[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let tail = &rest[at + 3..];
        let end = tail
            .find(|c: char| {
                c.is_whitespace()
                    || matches!(c, '"' | '\'' | ')' | '(' | '<' | '>' | '`' | ']' | '[')
            })
            .unwrap_or(tail.len());
        let whole = at + 3 + end;
        if scheme_start == at {
            // `://` without a scheme: not a URL; keep it and go on.
            out.push_str(&rest[..at + 3]);
            rest = &rest[at + 3..];
            continue;
        }
        out.push_str(&rest[..scheme_start]);
        out.push_str(&url(&rest[scheme_start..whole]));
        rest = &rest[whole..];
    }
    out.push_str(rest);
    out
}

/// A URL that does not parse as one but holds an `@` after its scheme: a password with
/// an unencoded `?`, `/` or `#` would defeat the usual split, so the userinfo is taken
/// to end at the last `@` before the first `/` after the first `@`, its password (or all
/// of it, without a `:`) masked, and the query and fragment dropped. `None` for anything
/// else.
fn unparsable_with_userinfo(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    let first_at = rest.find('@')?;
    if url::Url::parse(text).is_ok() {
        return None;
    }
    let end = rest[first_at..]
        .find('/')
        .map_or(rest.len(), |slash| first_at + slash);
    let last_at = rest[..end].rfind('@')?;
    let host = &rest[last_at + 1..end];
    let path = rest[end..].split(['?', '#']).next().unwrap_or("");
    // The user is what comes before the first `:`; without one, the userinfo may be a
    // token and is masked whole.
    let userinfo = match rest[..last_at].split_once(':') {
        Some((user, _)) => format!("{user}:{MASK}"),
        None => MASK.to_owned(),
    };
    Some(format!("{scheme}://{userinfo}@{host}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_tokens_and_query_values_are_masked() {
        assert_eq!(
            url("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(url("nats://s3cr3t-token@h:4222"), "nats://***@h:4222");
        assert_eq!(
            url("https://h/p?token=abc&v=2&flag"),
            "https://h/p?token=***&v=2&flag"
        );
        assert_eq!(
            url("https://b.s3/x?X-Amz-Credential=AK&X-Amz-Signature=ff&X-Amz-Expires=60&api_key=k"),
            "https://b.s3/x?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Expires=60&api_key=***"
        );
        assert_eq!(
            url("dynamodb://t?ttl=forever&region=eu"),
            "dynamodb://t?ttl=forever&region=eu"
        );
        assert_eq!(url("http://h/p#k=v"), "http://h/p#***");
        assert_eq!(url("u:pw@h:1"), "u:***@h:1");
    }

    #[test]
    fn a_password_that_breaks_the_url_is_still_masked() {
        for broken in [
            "postgres://postgres:hun?ter2@127.0.0.1:5432/test?schema=a",
            "postgres://postgres:hun/ter2@127.0.0.1:5432/test",
            "postgres://postgres:hun#ter2@127.0.0.1:5432/test",
            "postgres://postgres:hun@ter2@127.0.0.1:5432/test",
        ] {
            let shown = url(broken);
            assert!(!shown.contains("ter2"), "{broken} → {shown}");
            assert!(!shown.contains("hun"), "{broken} → {shown}");
            assert!(shown.contains("***@127.0.0.1:5432"), "{broken} → {shown}");
        }
        // A valid URL is masked as usual; an `@` in its query is not userinfo.
        assert_eq!(url("http://h/p?email=a@b.c"), "http://h/p?email=a@b.c");
    }

    #[test]
    fn every_url_in_a_message_is_masked() {
        assert_eq!(
            text("error sending request for url (http://u:pw@127.0.0.1:1/e?token=SECRET): refused"),
            "error sending request for url (http://u:***@127.0.0.1:1/e?token=***): refused"
        );
        assert_eq!(
            text("a https://x/?key=1 and \"redis://:p@h/0\" end"),
            "a https://x/?key=*** and \"redis://:***@h/0\" end"
        );
        assert_eq!(text("no url :// here"), "no url :// here");
        assert_eq!(text("plain"), "plain");
    }
}
