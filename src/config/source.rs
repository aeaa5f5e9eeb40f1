//! Where the settings come from, so they can be read again: the environment the process
//! started with, and over it the `ORDER_SERVICE_ENV_FILE` (KEY=VALUE lines), which is re-read on
//! every reload (`POST /admin/reload`, `SIGHUP`). The file wins over the environment: it is the
//! one thing an operator can change while the process runs, and a reload that a stale
//! environment variable silently overrode would be worse than none.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::env::{ConfigError, invalid};

/// The variable naming the environment file.
pub const ENV_FILE: &str = "ORDER_SERVICE_ENV_FILE";

/// Variables a reload puts in force; any other change in the file needs a restart.
pub fn is_reloadable(var: &str) -> bool {
    let resilience =
        ["USER_", "PRODUCT_"].iter().any(|prefix| var.starts_with(prefix)) && !var.ends_with("_SERVICE_URL");
    resilience || var == "ORDER_DEADLINE_MS"
}

/// The start-up environment of every variable the service reads, and the file's path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    pub(super) base: BTreeMap<String, String>,
    pub(super) file: Option<PathBuf>,
}

impl Source {
    /// The environment file, if one is set.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }
}

/// The file's KEY=VALUE lines. Blank lines and `#` comments are skipped; `export ` before a
/// key and one pair of quotes around a value are allowed (what shells and systemd's
/// `EnvironmentFile=` write); anything else names the line that is wrong.
pub(super) fn read_env_file(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| invalid(ENV_FILE, format!("cannot read {shown}: {e}")))?;
    parse_env_file(&text).map_err(|(line, why)| invalid(ENV_FILE, format!("{shown} line {line}: {why}")))
}

fn parse_env_file(text: &str) -> Result<BTreeMap<String, String>, (usize, &'static str)> {
    let mut values = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (key, value) = line.split_once('=').ok_or((number + 1, "expected KEY=VALUE"))?;
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err((number + 1, "a key is letters, digits and _"));
        }
        let value = value.trim();
        let unquoted =
            ['"', '\''].iter().find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q))).unwrap_or(value);
        values.insert(key.to_owned(), unquoted.to_owned());
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_format_is_what_shells_and_systemd_write() {
        let text =
            "# resilience\n\nPRODUCT_ATTEMPT_TIMEOUT_MS=300\nexport USER_MAX_ATTEMPTS = 2\nA='x y'\nB=\"z\"\nC=\n";
        let values = parse_env_file(text).expect("valid");
        let expected =
            [("A", "x y"), ("B", "z"), ("C", ""), ("PRODUCT_ATTEMPT_TIMEOUT_MS", "300"), ("USER_MAX_ATTEMPTS", "2")];
        assert_eq!(values, expected.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect());
        assert_eq!(parse_env_file("A=1\nnonsense\n"), Err((2, "expected KEY=VALUE")));
        assert_eq!(parse_env_file("A B=1\n"), Err((1, "a key is letters, digits and _")));
    }

    #[test]
    fn only_resilience_settings_are_reloadable() {
        for var in
            ["PRODUCT_ATTEMPT_TIMEOUT_MS", "USER_HEDGE_PERCENTILE", "USER_STALE_IF_ERROR_MS", "ORDER_DEADLINE_MS"]
        {
            assert!(is_reloadable(var), "{var}");
        }
        for var in ["PRODUCT_SERVICE_URL", "HTTP_ADDR", "DATABASE_URL", "ADMIN_ADDR", "OUTBOX_BATCH_SIZE"] {
            assert!(!is_reloadable(var), "{var}");
        }
    }
}
