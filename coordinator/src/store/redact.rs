//! Passwords out of what the coordinator prints about its store.

/// The URL with its passwords replaced by `***`.
///
/// A URL that parses with a host is read as sqlx reads it (the `url` crate):
/// the userinfo's password goes, and the value of every query parameter
/// whose name, percent-decoded, holds `pass` (sqlx takes `?password=`, and
/// `pass%77ord` is that too); a path with an `@` (a password's unencoded
/// `/` made the rest of it the database name) goes whole. Anything else (a
/// mistyped scheme, a password whose unencoded `?` or `/` keeps it from
/// parsing) shows only its scheme, what follows its last `@` up to a `?`, and
/// the query's names. Found by reviews, 2026-12-06: a mistyped scheme, a
/// `?password=` and a query with an `@` in it were printed whole.
pub(crate) fn redact(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(u) if u.has_host() && text.contains("://") => parsed(&u),
        _ => unparsed(text),
    }
}

/// The connect parameters sqlx reads (`sqlx-postgres`'s `options/parse.rs`).
const KNOWN: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// The first query parameter of a PostgreSQL URL that sqlx does not know.
/// sqlx ignores one with a warning that prints its value (an
/// `sslpassword=` in clear), and a misspelt `sslmode` left the connection
/// without verified TLS: refused instead (found by a review, 2026-12-06).
/// A part without `=` is not named: it may be a misplaced secret.
pub(crate) fn unknown_parameter(text: &str) -> Option<String> {
    let u = url::Url::parse(text).ok()?;
    u.query()?.split('&').filter(|part| !part.is_empty()).find_map(|part| {
        let Some((name, _)) = part.split_once('=') else { return Some("a part without '='".into()) };
        let name = url::form_urlencoded::parse(name.as_bytes()).next().map(|(n, _)| n.into_owned()).unwrap_or_default();
        let known = KNOWN.contains(&name.as_str()) || (name.starts_with("options[") && name.ends_with(']'));
        (!known).then(|| format!("'{name}'"))
    })
}

fn parsed(u: &url::Url) -> String {
    let mut out = format!("{}://", u.scheme());
    if !u.username().is_empty() || u.password().is_some() {
        out.push_str(u.username());
        if u.password().is_some() {
            out.push_str(":***");
        }
        out.push('@');
    }
    out.push_str(u.host_str().unwrap_or_default());
    if let Some(port) = u.port() {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(if u.path().contains('@') { "/***" } else { u.path() });
    if let Some(query) = u.query() {
        out.push('?');
        out.push_str(&hide_values(query, |name| name.contains("pass")));
    }
    out
}

fn unparsed(text: &str) -> String {
    let (head, query) = match text.rfind('@') {
        Some(at) => {
            let (host, query) = split_query(&text[at..]);
            (format!("{}***{host}", scheme_of(&text[..at])), query)
        }
        None => {
            let (head, query) = split_query(text);
            (head.to_string(), query)
        }
    };
    match query {
        Some(query) => format!("{head}?{}", hide_values(query, |_| true)),
        None => head,
    }
}

/// `scheme://` or a mistyped `scheme:` at the start of `text`, if any.
fn scheme_of(text: &str) -> &str {
    if let Some(i) = text.find("://") {
        return &text[..i + 3];
    }
    match text.find(':') {
        Some(i) if i > 0 && text[..i].bytes().all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b)) => {
            &text[..i + 1]
        }
        _ => "",
    }
}

fn split_query(text: &str) -> (&str, Option<&str>) {
    text.split_once('?').map_or((text, None), |(head, query)| (head, Some(query)))
}

/// `query` with the value of each parameter whose decoded, lower-case name
/// `hide` picks replaced by `***`.
fn hide_values(query: &str, hide: impl Fn(&str) -> bool) -> String {
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| {
            let name = pair.split('=').next().unwrap_or_default();
            let decoded = url::form_urlencoded::parse(name.as_bytes()).next().map(|(n, _)| n.to_lowercase());
            match decoded {
                Some(n) if pair.contains('=') && hide(&n) => format!("{name}=***"),
                _ => pair.to_string(),
            }
        })
        .collect();
    pairs.join("&")
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn every_password_in_a_url_is_hidden() {
        for (url, shown) in [
            ("postgres://u@h/d", "postgres://u@h/d"),
            ("postgres://u:p@h:5432/d?sslmode=disable", "postgres://u:***@h:5432/d?sslmode=disable"),
            ("postgresql://[::1]:5432/d", "postgresql://[::1]:5432/d"),
            // Does not parse, or not as its writer meant.
            ("postgres:/weave:wrongpw@h:5433/w1", "postgres:***@h:5433/w1"),
            ("postgres//weave:secretpw@h:5433/w1", "***@h:5433/w1"),
            ("postgres://weave:se/cretpw@h:5433/w1", "postgres://***@h:5433/w1"),
            ("postgres://weave:se?cretpw@h:5433/w1", "postgres://***@h:5433/w1"),
            ("postgres://weave:12/cretpw@h/w1", "postgres://weave:12/***"),
            ("postgres://weave:se@cret@h/w1", "postgres://weave:***@h/w1"),
            // In the query.
            (
                "postgres://u@%2Ftmp%2Fpg/w?password=S3cret&sslmode=disable",
                "postgres://u@%2Ftmp%2Fpg/w?password=***&sslmode=disable",
            ),
            ("postgres://u:p@h/w?sslPassword=k&Password=x", "postgres://u:***@h/w?sslPassword=***&Password=***"),
            ("postgres://h/w?password=only", "postgres://h/w?password=***"),
            ("postgres://u@h/w?password=S3cr@t&sslmode=disable", "postgres://u@h/w?password=***&sslmode=disable"),
            (
                "postgres://u@h:5432/w?application_name=ops@site1&password=S3cret",
                "postgres://u@h:5432/w?application_name=ops@site1&password=***",
            ),
            ("postgres://u@h/w?pass%77ord=S3cret&sslmode=disable", "postgres://u@h/w?pass%77ord=***&sslmode=disable"),
            ("postgres:u@h/w?password=S3cret&x=y", "postgres:***@h/w?password=***&x=***"),
            ("/var/lib/weave/coordinator.db", "/var/lib/weave/coordinator.db"),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    #[test]
    fn a_parameter_sqlx_would_ignore_is_named() {
        let unknown = |u: &str| super::unknown_parameter(u);
        assert_eq!(unknown("postgres://u:p@h/w?sslmode=verify-full&application_name=x&options[search_path]=a"), None);
        assert_eq!(unknown("postgres://u@h/w?sslmdoe=verify-full").as_deref(), Some("'sslmdoe'"));
        assert_eq!(unknown("postgres://u@h/w?sslpassword=S3cret").as_deref(), Some("'sslpassword'"));
        assert_eq!(unknown("postgres://u@h/w?sslmode=disable&S3cret").as_deref(), Some("a part without '='"));
        assert_eq!(unknown("postgres://u@h/w"), None);
    }
}
