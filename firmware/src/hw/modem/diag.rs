//! `kodama-camera diag modem --port PATH [--baud N]`: one bring-up against the
//! modem on a serial port, reported as a single JSON document.
//!
//! Read-only by design: apart from echo off and numeric error codes nothing is
//! changed on the modem (no APN, no GNSS start, no data call), so an installer
//! can run it next to a misbehaving unit without making things worse.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::client;
use super::engine::CommandError;
use super::policy::RecoveryConfig;
use super::supervisor::{NoPin, SerialConnector, Supervisor, SupervisorOptions};

/// Run bring-up on `port` and return the modem's state as JSON: `port`, `model`,
/// `sim`, `registration`, `technology`, `band`, `operator`, `mcc_mnc`,
/// `signal_dbm`, `csq`, `gnss_on`, `data_session_up`, `network_time`,
/// `last_error`. `timeout` bounds the whole run.
pub async fn diag_modem(
    port: &Path,
    baud: u32,
    timeout: Duration,
) -> anyhow::Result<serde_json::Value> {
    // Open once up front so a wrong path fails with the OS's reason.
    drop(client::open_serial(port, baud).context("diag modem")?);
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let opts = SupervisorOptions {
        apn: None,
        gnss: false,
        data_session: false,
        // Each command gets at most a fifth of the budget, so a dead modem is
        // reported before the overall deadline.
        command_timeout: (timeout / 5).max(Duration::from_millis(100)),
        poll_interval: timeout,
        recovery: RecoveryConfig {
            // Never escalate to a reset from diag.
            max_timeouts: u32::MAX,
            has_pwrkey: false,
            ..RecoveryConfig::default()
        },
    };
    let connector = SerialConnector::new(port.to_path_buf(), baud);
    let (_rx, mut sup) = Supervisor::<_, NoPin>::new(connector, None, opts, cancel.clone());
    let run = tokio::time::timeout(timeout, sup.bring_up(false)).await;
    let port_s = port.display().to_string();
    match run {
        Err(_) => anyhow::bail!(
            "modem on {port_s} did not finish bring-up within {timeout:?} (last error: {})",
            sup.status().last_error.as_deref().unwrap_or("none")
        ),
        Ok(Err(CommandError::Timeout { command, .. })) if command == "AT" => anyhow::bail!(
            "no answer to AT on {port_s} at {baud} baud: is this the modem's AT port \
             (SIM7600 over USB: /dev/ttyUSB2) and is the modem powered?"
        ),
        Ok(Err(e)) => anyhow::bail!("modem on {port_s}: {e}"),
        Ok(Ok(())) => {}
    }
    let mut v = serde_json::to_value(sup.status()).context("serialising modem status")?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("port".into(), serde_json::Value::String(port_s));
        obj.insert("baud".into(), serde_json::Value::from(baud));
        // Recovery counters mean nothing for a one-shot run.
        for k in ["state", "at_resets", "power_cycles", "recoveries"] {
            obj.remove(k);
        }
    }
    Ok(v)
}
