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

/// The URL without the query parameters sqlx does not know, and their
/// names (a part without `=` is not named: it may be a misplaced secret).
/// sqlx ignores such a parameter with a warning that prints its value (an
/// `sslpassword=` in clear), on every parse of the URL; a misspelt `sslmode`
/// also leaves the connection without verified TLS, which the coordinator's
/// own warning then says (found by a review, 2026-12-06). Not refused: a
/// libpq parameter (`connect_timeout`, `target_session_attrs`) in a URL that
/// worked before must not stop an upgraded coordinator.
pub(crate) fn without_unknown_parameters(text: &str) -> (String, Vec<String>) {
    let Ok(u) = url::Url::parse(text) else { return (text.to_string(), Vec::new()) };
    let Some(query) = u.query() else { return (text.to_string(), Vec::new()) };
    let (mut kept, mut dropped) = (Vec::new(), Vec::new());
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let Some((name, _)) = part.split_once('=') else {
            dropped.push("(a part without '=')".to_string());
            continue;
        };
        let name = decoded(name);
        if KNOWN.contains(&name.as_str()) || (name.starts_with("options[") && name.ends_with(']')) {
            kept.push(part);
        } else {
            dropped.push(name);
        }
    }
    if dropped.is_empty() {
        return (text.to_string(), dropped);
    }
    let base = &text[..text.find('?').unwrap_or(text.len())];
    let url = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
    (url, dropped)
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

/// A query parameter's name as sqlx reads it (percent-decoded).
fn decoded(name: &str) -> String {
    url::form_urlencoded::parse(name.as_bytes()).next().map(|(n, _)| n.into_owned()).unwrap_or_default()
}

/// `query` with the value of each parameter whose decoded, lower-case name
/// `hide` picks replaced by `***`.
fn hide_values(query: &str, hide: impl Fn(&str) -> bool) -> String {
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if hide(&decoded(name).to_lowercase()) => format!("{name}=***"),
            _ => pair.to_string(),
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
    fn parameters_sqlx_would_ignore_are_left_out_and_named() {
        let strip = |u: &str| super::without_unknown_parameters(u);
        let known = "postgres://u:p@h/w?sslmode=verify-full&application_name=x&options[search_path]=a";
        assert_eq!(strip(known), (known.to_string(), vec![]));
        assert_eq!(strip("postgres://u@h/w"), ("postgres://u@h/w".to_string(), vec![]));
        assert_eq!(
            strip("postgres://u@h/w?sslmdoe=verify-full&sslmode=require&connect_timeout=10"),
            (
                "postgres://u@h/w?sslmode=require".to_string(),
                vec!["sslmdoe".to_string(), "connect_timeout".to_string()]
            )
        );
        let (url, dropped) = strip("postgres://u@h/w?sslpassword=S3cret&S3cr3t2");
        assert_eq!(url, "postgres://u@h/w");
        assert_eq!(dropped, ["sslpassword", "(a part without '=')"]);
        assert!(!format!("{dropped:?}").contains("S3cr"));
    }
}
