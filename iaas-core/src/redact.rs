//! Secrets out of URLs before they are logged, shown in an error or put in a metric: one
//! function every backend uses, so no crate redacts a little differently from the others.

/// Query parameters whose value is a secret (compared without case).
const SECRET_PARAMETERS: &[&str] =
    &["password", "sslpassword", "passwd", "secret", "token", "api_key", "apikey", "key"];

/// `url` with its secrets replaced by `***`: the password of `user:password@` (a userinfo
/// without a colon may be a token on its own and goes whole), and the values of query
/// parameters such as `password` or `token`. Text that is not a `scheme://` URL is returned
/// as it is.
///
/// ```
/// use iaas_core::redact_url;
/// assert_eq!(redact_url("postgres://iaas:s3cret@db:5432/iaas"), "postgres://iaas:***@db:5432/iaas");
/// assert_eq!(redact_url("redis://:s3cret@cache:6379/0"), "redis://:***@cache:6379/0");
/// assert_eq!(redact_url("https://T0KEN@es:9200"), "https://***@es:9200");
/// assert_eq!(redact_url("postgres://db/iaas?password=s3cret&sslmode=require"),
///            "postgres://db/iaas?password=***&sslmode=require");
/// assert_eq!(redact_url("http://es:9200"), "http://es:9200");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_owned() };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    // The authority ends at the first `/`, `?` or `#`; an `@` after it belongs to the path.
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***{host}"),
                None => format!("***{host}"),
            }
        }
        None => authority.to_owned(),
    };
    format!("{scheme}{authority}{}", redact_query(tail))
}

/// `text` (an error message, say) with every `scheme://...` URL in it passed through
/// [`redact_url`]; a URL ends at whitespace or at one of `)"'<>,`.
///
/// ```
/// use iaas_core::redact_urls_in;
/// assert_eq!(
///     redact_urls_in("error sending request for url (http://elastic:s3cret@es:9200/_bulk)"),
///     "error sending request for url (http://elastic:***@es:9200/_bulk)"
/// );
/// ```
pub fn redact_urls_in(text: &str) -> String {
    let ends = |c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '<' | '>' | ',');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(marker) = rest.find("://") {
        // The scheme: the letters (and `+.-`) right before `://`.
        let start = rest[..marker]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-')))
            .map_or(0, |at| at + 1);
        let end = rest[marker..].find(ends).map_or(rest.len(), |at| marker + at);
        out.push_str(&rest[..start]);
        out.push_str(&redact_url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn redact_query(tail: &str) -> String {
    let Some(question) = tail.find('?') else { return tail.to_owned() };
    let (path, query) = tail.split_at(question + 1);
    let (query, fragment) = match query.find('#') {
        Some(hash) => query.split_at(hash),
        None => (query, ""),
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _))
                if SECRET_PARAMETERS.iter().any(|secret| name.eq_ignore_ascii_case(secret)) =>
            {
                format!("{name}=***")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{path}{}{fragment}", pairs.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_secret_goes_and_nothing_else_changes() {
        for (url, want) in [
            (
                "postgres://iaas:secret@127.0.0.1:5432/iaas",
                "postgres://iaas:***@127.0.0.1:5432/iaas",
            ),
            ("redis://:secret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
            ("rediss://user:p%40ss@cache:6380", "rediss://user:***@cache:6380"),
            ("https://token@es:9200/logs", "https://***@es:9200/logs"),
            ("http://es:9200/a@b", "http://es:9200/a@b"),
            (
                "postgres://db/x?sslmode=require&Password=s",
                "postgres://db/x?sslmode=require&Password=***",
            ),
            ("http://h/?token=abc#frag", "http://h/?token=***#frag"),
            ("sqlite:///var/lib/iaas.db", "sqlite:///var/lib/iaas.db"),
            ("unix:///run/redis.sock", "unix:///run/redis.sock"),
            ("127.0.0.1:9092", "127.0.0.1:9092"),
            ("", ""),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn urls_inside_a_message_are_redacted_and_the_rest_kept() {
        assert_eq!(
            redact_urls_in(
                "a redis://:pw@h:1/0 and \"postgres://u:pw@db/x\", then http://ok:80/ end"
            ),
            "a redis://:***@h:1/0 and \"postgres://u:***@db/x\", then http://ok:80/ end"
        );
        assert_eq!(redact_urls_in("no url here"), "no url here");
        assert_eq!(redact_urls_in("://odd"), "://odd");
    }

    #[test]
    fn a_password_holding_an_at_sign_or_a_colon_goes_whole() {
        assert_eq!(redact_url("postgres://u:a@b:c@db/x"), "postgres://u:***@db/x");
    }
}
