//! Where the home is, and the config file in it (`config.toml`).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use triad_agent::Config;
use triad_agent::control::{Client, ClientError, Request, answer};

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

/// Loads `config.toml` from the home; a missing file is the default config.
pub(crate) fn load(home: &Path) -> Result<Config> {
    Ok(Config::load(home)?)
}

/// Writes `config.toml` into the home atomically.
pub(crate) fn save(home: &Path, config: &Config) -> Result<()> {
    Ok(config.save(home)?)
}

/// Tells the agent of the home, if one runs, to read the settings again; its answer says what
/// it now does. `None` if no agent runs.
pub(crate) fn tell_agent(home: &Path) -> Result<Option<answer::Reloaded>> {
    match Client::connect(home) {
        Ok(mut client) => {
            client.send(&Request::Reload)?;
            match client.answer()? {
                Ok(reloaded) => Ok(Some(reloaded)),
                Err(failure) => bail!(
                    "the settings are saved, but the running agent cannot use them: {}",
                    failure.error
                ),
            }
        }
        Err(ClientError::NotRunning { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The config as TOML text.
pub(crate) fn to_toml(config: &Config) -> Result<String> {
    Ok(config.to_toml()?)
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
