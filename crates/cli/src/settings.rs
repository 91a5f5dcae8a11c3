//! Where the home is, and the config file in it (`config.toml`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use triad_agent::Config;

/// The home directory: `--home`, `TRIAD_HOME`, or the platform's data directory.
pub(crate) fn home_dir(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = given {
        return Ok(absolute(path));
    }
    match directories::ProjectDirs::from("", "", "triad") {
        Some(dirs) => Ok(dirs.data_dir().to_path_buf()),
        None => bail!("cannot find a home directory for triad: set TRIAD_HOME"),
    }
}

/// `path` made absolute against the current directory (without resolving links).
pub(crate) fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn config_path(home: &Path) -> PathBuf {
    home.join("config.toml")
}

/// Loads `config.toml` from the home; a missing file is the default config.
pub(crate) fn load(home: &Path) -> Result<Config> {
    let path = config_path(home);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
        Err(e) => return Err(e).with_context(|| format!("while reading {}", path.display())),
    };
    toml::from_str(&text).with_context(|| format!("while reading settings from {}", path.display()))
}

/// Writes `config.toml` into the home atomically.
pub(crate) fn save(home: &Path, config: &Config) -> Result<()> {
    let path = config_path(home);
    let text = to_toml(config)?;
    triad_agent::home::write_atomic(&path, text.as_bytes(), 0o600)
        .with_context(|| format!("while writing {}", path.display()))
}

/// The config as TOML text.
pub(crate) fn to_toml(config: &Config) -> Result<String> {
    let body = toml::to_string_pretty(config).context("while encoding settings")?;
    Ok(format!("# triad settings for this device; `triad config show` prints them.\n{body}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_config_in_deploy_parses() {
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
        let mut seen = 0;
        for entry in std::fs::read_dir(&deploy).expect("deploy/ exists") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).expect("read");
                let config: Config = toml::from_str(&text)
                    .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
                assert!(!config.folders.is_empty(), "{} names no folder", path.display());
                seen += 1;
            }
        }
        assert!(seen > 0, "no example config in deploy/");
    }

    #[test]
    fn default_round_trips() {
        let text = to_toml(&Config::default()).expect("encodes");
        let back: Config = toml::from_str(&text).expect("parses");
        assert_eq!(back.backup, Config::default().backup);
    }
}
