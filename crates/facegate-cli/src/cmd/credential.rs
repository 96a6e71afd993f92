//! `facegate credential issue|revoke|list`: the Art. 10 register of PINs, cards and QR codes,
//! independent of face consent. Values are read from standard input or generated, never taken
//! from the command line (where `ps` and shell history would keep them).

use std::io::{BufRead, Read};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use facegate_policy::CredentialKind;
use facegate_store::{CredentialId, StoreError};
use facegate_types::SubjectId;
use serde_json::json;

use crate::cli::{Cli, CredentialCommand};
use crate::config::Config;

/// Digits of a generated PIN.
const GENERATED_PIN_DIGITS: usize = 6;

pub fn run(cli: &Cli, cmd: &CredentialCommand) -> Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    let mut store = super::store::open_store(cli, &config)?;
    match cmd {
        CredentialCommand::Issue {
            holder,
            kind,
            generate,
            label,
            operator,
            json,
        } => {
            let holder = SubjectId::new(holder.clone())?;
            if !config.policy.alternatives().accepts(*kind) {
                bail!(
                    "{kind} credentials are not enabled at this terminal: set [alternatives] {kind} = true first"
                );
            }
            let (info, shown) = if *generate {
                if *kind != CredentialKind::Pin {
                    bail!(
                        "--generate makes PINs only; read a card number or QR payload from standard input"
                    );
                }
                let mut tries = 0;
                loop {
                    let pin = random_pin(GENERATED_PIN_DIGITS)?;
                    match store.issue_credential(&holder, *kind, &pin, label, operator) {
                        Ok(info) => break (info, Some(pin)),
                        Err(StoreError::CredentialInUse { .. }) if tries < 20 => tries += 1,
                        Err(e) => return Err(e.into()),
                    }
                }
            } else {
                let value = read_value()?;
                (
                    store.issue_credential(&holder, *kind, &value, label, operator)?,
                    None,
                )
            };
            if *json {
                println!(
                    "{}",
                    json!({ "credential": info.id.0, "holder": holder, "kind": kind.as_str(),
                            "expires_at": info.expires_at, "pin": shown })
                );
            } else {
                println!(
                    "issued {kind} credential {} to {holder}; valid until {}",
                    info.id,
                    crate::output::date(info.expires_at)
                );
                if let Some(pin) = shown {
                    // Shown once, to the operator handing it over; the store keeps only a keyed digest.
                    println!("PIN: {pin}");
                }
            }
        }
        CredentialCommand::Revoke {
            holder,
            id,
            kind,
            operator,
            reason,
        } => {
            let holder = SubjectId::new(holder.clone())?;
            let n =
                store.revoke_credentials(&holder, id.map(CredentialId), *kind, operator, reason)?;
            println!("revoked {n} credential(s) of {holder}");
        }
        CredentialCommand::List { holder, json } => {
            let holder = holder.clone().map(SubjectId::new).transpose()?;
            let list = store.list_credentials(holder.as_ref())?;
            let now = facegate_types::Clock::now(&facegate_types::SystemClock);
            if *json {
                let rows: Vec<_> = list
                    .iter()
                    .map(|c| {
                        json!({ "credential": c.id.0, "holder": c.holder, "kind": c.kind.as_str(),
                                "label": c.label, "issued_at": c.issued_at, "expires_at": c.expires_at,
                                "revoked_at": c.revoked_at, "live": c.is_live(now) })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!(
                    "{:>6}  {:<24} {:<5} {:<8} {:<10}  label",
                    "id", "holder", "kind", "state", "expires"
                );
                for c in &list {
                    let state = if c.revoked_at.is_some() {
                        "revoked"
                    } else if c.is_live(now) {
                        "live"
                    } else {
                        "expired"
                    };
                    println!(
                        "{:>6}  {:<24} {:<5} {:<8} {:<10}  {}",
                        c.id,
                        c.holder.as_str(),
                        c.kind.as_str(),
                        state,
                        crate::output::date(c.expires_at),
                        c.label
                    );
                }
                println!("{} credential(s)", list.len());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One line from standard input (a keypad, a card reader in keyboard mode, or a pipe).
fn read_value() -> Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .take(facegate_policy::MAX_CREDENTIAL_LEN as u64 + 2)
        .read_line(&mut line)
        .context("reading the credential value from standard input")?;
    let value = line.trim_end_matches(['\r', '\n']).to_owned();
    if value.trim().is_empty() {
        bail!(
            "no credential value on standard input (type it, or pipe it in: `printf %s 04A1B2 | facegate credential issue ...`)"
        );
    }
    Ok(value)
}

/// A uniformly random PIN from the kernel's generator (rejection sampling, no modulo bias).
fn random_pin(digits: usize) -> Result<String> {
    let mut f = std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?;
    let mut out = String::with_capacity(digits);
    let mut buf = [0u8; 64];
    while out.len() < digits {
        f.read_exact(&mut buf).context("reading /dev/urandom")?;
        for &b in &buf {
            if b < 250 && out.len() < digits {
                out.push(char::from(b'0' + b % 10));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn generated_pins_are_valid_and_vary() {
        let a = random_pin(6).unwrap();
        assert_eq!(a.len(), 6);
        assert!(CredentialKind::Pin.canonical(&a).is_ok());
        let distinct: std::collections::HashSet<String> =
            (0..20).map(|_| random_pin(6).unwrap()).collect();
        assert!(distinct.len() > 15, "{distinct:?}");
    }
}
