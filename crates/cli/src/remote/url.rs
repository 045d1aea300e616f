//! The URL of a database on a dosql server: `<scheme>://<authority><path prefix>/db/<name>`.

/// A database URL: `<scheme>://<authority><path prefix>/db/<name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbUrl {
    /// Everything up to and including the database name, without a trailing slash.
    pub base: String,
    /// The database name.
    pub name: String,
}

impl DbUrl {
    /// Parses the parts of `<scheme>://<rest>` (split at the `://`); why not, for messages.
    pub fn parse(scheme: &str, rest: &str) -> Result<DbUrl, String> {
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(format!("the scheme must be http or https, not {scheme}"));
        }
        if rest.contains(['?', '#']) {
            return Err("a target URL takes no query or fragment".into());
        }
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.is_empty() {
            return Err("no host".into());
        }
        if authority.contains('@') {
            return Err("credentials go in --token / DOSQL_TOKEN, not in the URL".into());
        }
        let host_port = authority;
        let (host, port) = match host_port.rsplit_once(':') {
            // An IPv6 literal ([::1]) has colons of its own; the port follows the bracket.
            Some((h, p)) if !p.contains(']') => (h, Some(p)),
            _ => (host_port, None),
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(format!("bad host {host:?}"));
        }
        if let Some(p) = port
            && p.parse::<u16>().map_or(true, |p| p == 0)
        {
            return Err(format!("bad port {p:?}"));
        }
        let path = path.strip_suffix('/').unwrap_or(path);
        let Some(at) = path.rfind("/db/") else {
            return Err("the path must end in /db/<name>".into());
        };
        let name = &path[at + 4..];
        if !valid_name(name) {
            return Err(format!(
                "bad database name {name:?}: 1-64 characters of A-Z a-z 0-9 _ . -"
            ));
        }
        Ok(DbUrl {
            base: format!("{scheme}://{authority}{path}"),
            name: name.to_owned(),
        })
    }
}

/// The names the Worker accepts (see worker/src/index.ts).
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Result<DbUrl, String> {
        let (scheme, rest) = s.split_once("://").unwrap();
        DbUrl::parse(scheme, rest)
    }

    #[test]
    fn good_urls() {
        let u = url("http://127.0.0.1:8787/db/chat").unwrap();
        assert_eq!(u.base, "http://127.0.0.1:8787/db/chat");
        assert_eq!(u.name, "chat");
        let u = url("HTTPS://example.com/api/db/a.b-c_d/").unwrap();
        assert_eq!(u.base, "https://example.com/api/db/a.b-c_d");
        assert!(url("http://[::1]:8787/db/x").is_ok());
    }

    #[test]
    fn bad_urls() {
        for bad in [
            "http:///db/x",
            "http://host",
            "http://host/",
            "http://host/db/",
            "http://host/db/a/b",
            "http://host:99999/db/x",
            "http://host:/db/x",
            "http://host/db/x?y=1",
            "http://user:pw@host/db/x",
            "ftp://host/db/x",
            "http://host/db/bad name",
        ] {
            assert!(url(bad).is_err(), "{bad}");
        }
    }
}
