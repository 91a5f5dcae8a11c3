//! Showing the recovery phrase once, and reading it back from a prompt or standard input.

use std::io::{self, BufRead, IsTerminal, Read, Write};

use anyhow::{Context, Result, bail};
use triad_core::keys::Phrase;
use zeroize::Zeroizing;

/// Prints the phrase in numbered columns to the terminal.
pub(crate) fn show(phrase: &Phrase) -> Result<()> {
    let words = phrase.words();
    let mut out = io::stdout().lock();
    writeln!(out, "\nYour recovery phrase (write it down on paper and keep it somewhere safe;")?;
    writeln!(out, "with it and any one surviving store, everything can be restored):\n")?;
    for row in 0..6 {
        let line: Vec<String> = (0..4)
            .map(|col| {
                let i = col * 6 + row;
                format!("{:>2}. {:<10}", i + 1, words[i])
            })
            .collect();
        writeln!(out, "  {}", line.join("  "))?;
    }
    writeln!(out, "\nThis phrase is shown only now. triad never stores it.")?;
    Ok(())
}

/// On a terminal, asks for two words of the phrase back, so a person cannot skip writing it
/// down. `picks` are two distinct word positions (0-based), drawn by the caller.
pub(crate) fn confirm(phrase: &Phrase, picks: [usize; 2]) -> Result<()> {
    let words = phrase.words();
    let stdin = io::stdin();
    for &i in &picks {
        loop {
            print!("Type word {} of your phrase to confirm you wrote it down: ", i + 1);
            io::stdout().flush()?;
            let mut line = Zeroizing::new(String::new());
            if stdin.lock().read_line(&mut line)? == 0 {
                bail!(
                    "no answer: the phrase was not confirmed (the vault is created; keep the phrase safe)"
                );
            }
            if line.trim().eq_ignore_ascii_case(words[i]) {
                break;
            }
            println!("That is not word {}. Look at what you wrote down and try again.", i + 1);
        }
    }
    println!("Confirmed.");
    Ok(())
}

/// Reads a phrase: from a prompt (without echo) on a terminal, else from standard input.
/// Never from the command line.
pub(crate) fn read() -> Result<Phrase> {
    let text = if io::stdin().is_terminal() {
        Zeroizing::new(
            rpassword::prompt_password("Recovery phrase (24 words, not shown as you type): ")
                .context("while reading the recovery phrase")?,
        )
    } else {
        let mut text = Zeroizing::new(String::new());
        io::stdin()
            .read_to_string(&mut text)
            .context("while reading the recovery phrase from standard input")?;
        text
    };
    Phrase::parse(&text).context("the recovery phrase was not accepted")
}
