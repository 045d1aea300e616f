//! Where a command points: a database on a dosql server (`http(s)://host[:port]/db/<name>`) or
//! a local store file, parsed into the [`Database`] that reaches it.

use std::path::PathBuf;

use crate::bail;
use crate::db::Database;
use crate::error::{Error, Result};
use crate::local::Local;
use crate::remote::{DbUrl, Remote};

/// A parsed `<target>` argument.
#[derive(Debug)]
pub enum Target {
    /// A database served over HTTP.
    Remote(DbUrl),
    /// A local durable store.
    Local(PathBuf),
}

impl Target {
    /// Parses `arg` (see [`Target::classify`]) into the database it names; nothing is opened
    /// or sent yet. `token` is sent to remote targets.
    pub fn parse(arg: &str, token: Option<&str>) -> Result<Box<dyn Database>> {
        Ok(match Target::classify(arg)? {
            Target::Remote(url) => Box::new(Remote::new(url, token)),
            Target::Local(path) => Box::new(Local::new(path)),
        })
    }

    /// Anything with a `scheme://` is a URL (http or https only), anything else a path.
    pub fn classify(arg: &str) -> Result<Target> {
        if arg.is_empty() {
            bail!("the target is empty: give http(s)://host/db/<name> or a store path");
        }
        match arg.split_once("://") {
            Some((scheme, rest)) if is_scheme(scheme) => {
                let url = DbUrl::parse(scheme, rest)
                    .map_err(|why| Error::msg(format!("bad target URL {arg:?}: {why}")))?;
                Ok(Target::Remote(url))
            }
            _ => Ok(Target::Local(PathBuf::from(arg))),
        }
    }
}

fn is_scheme(s: &str) -> bool {
    !s.is_empty()
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_local() {
        assert!(matches!(
            Target::classify("./data/x.redb").unwrap(),
            Target::Local(_)
        ));
        assert!(matches!(
            Target::classify("https://example.com/db/x").unwrap(),
            Target::Remote(_)
        ));
        assert!(Target::parse("gopher://x/db/y", None).is_err());
        assert!(Target::parse("", None).is_err());
        // The database shows as the target was given.
        let db = Target::parse("./data/x.redb", None).unwrap();
        assert_eq!(db.to_string(), "./data/x.redb");
        let db = Target::parse("HTTP://127.0.0.1:8787/db/x/", None).unwrap();
        assert_eq!(db.to_string(), "http://127.0.0.1:8787/db/x");
    }
}
