//! Passwords out of what the coordinator prints about its store.

/// The URL with its passwords replaced by `***`: the userinfo's and any
/// query parameter named `…password` (sqlx takes `?password=`). Also for
/// what does not parse (a mistyped scheme, a password with an unencoded `/`
/// or `?`): the userinfo is everything before the last `@`, so nothing of a
/// password is shown that a parser would have split elsewhere (found by a
/// review, 2026-12-06: those were printed whole).
pub(crate) fn redact(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let rest = match url.rfind('@') {
        Some(at) => {
            let before = &url[..at];
            // After the scheme: `scheme://`, or a mistyped `scheme:`.
            let scheme_end = match before.find("://") {
                Some(i) => i + 3,
                None => match before.find(':') {
                    Some(i) if before[..i].bytes().all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b)) => i + 1,
                    _ => 0,
                },
            };
            let userinfo = &before[scheme_end..];
            out.push_str(&before[..scheme_end]);
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            &url[at..]
        }
        None => url,
    };
    let (head, query) = rest.split_once('?').map_or((rest, None), |(h, q)| (h, Some(q)));
    out.push_str(head);
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.to_ascii_lowercase().ends_with("password") => format!("{key}=***"),
                _ => pair.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn every_password_in_a_url_is_hidden() {
        // What a parser would split elsewhere, or does not parse at all.
        for (url, shown) in [
            ("postgres:/weave:wrongpw@h:5433/w1", "postgres:/weave:***@h:5433/w1"),
            ("postgres//weave:secretpw@h:5433/w1", "postgres//weave:***@h:5433/w1"),
            ("postgres://weave:se/cretpw@h:5433/w1", "postgres://weave:***@h:5433/w1"),
            ("postgres://weave:se?cretpw@h:5433/w1", "postgres://weave:***@h:5433/w1"),
            ("postgres://weave:se@cret@h/w1", "postgres://weave:***@h/w1"),
            (
                "postgres://u@%2Ftmp%2Fpg/w?password=S3cret&sslmode=disable",
                "postgres://u@%2Ftmp%2Fpg/w?password=***&sslmode=disable",
            ),
            ("postgres://u:p@h/w?sslPassword=k&Password=x", "postgres://u:***@h/w?sslPassword=***&Password=***"),
            ("postgres://h/w?password=only", "postgres://h/w?password=***"),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
    }
}
