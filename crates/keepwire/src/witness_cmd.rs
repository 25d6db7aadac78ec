//! `keepwire witness`: a witness service an inspector general or NARA
//! can run ([`keepwire_records::witness`]). It follows the logs it is
//! given, keeps for each the latest checkpoint it cosigned, and answers
//! C2SP tlog-witness `POST /add-checkpoint` — cosigning a checkpoint only
//! with a valid consistency proof from that one.
//!
//! Its directory holds its key (`witness.key`, owner-only), its state
//! (`state.json`) and its lock: one witness process per directory.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use keepwire_records::witness::{Answer, Cosigner, FileState, Witness, MAX_REQUEST};

use crate::WitnessCommand;

const KEY_FILE: &str = "witness.key";
const NAME_FILE: &str = "witness.name";
const STATE_FILE: &str = "state.json";

/// The witness's cosigner, from its directory.
fn cosigner(dir: &Path) -> Result<Cosigner> {
    let name = std::fs::read_to_string(dir.join(NAME_FILE)).with_context(|| {
        format!(
            "{} holds no witness: `keepwire witness init` first",
            dir.display()
        )
    })?;
    let seed: [u8; 32] = std::fs::read(dir.join(KEY_FILE))?
        .try_into()
        .map_err(|_| anyhow::anyhow!("{} is not a 32-byte key", dir.join(KEY_FILE).display()))?;
    Ok(Cosigner::new(name.trim(), &seed)?)
}

pub async fn witness(command: WitnessCommand) -> Result<()> {
    match command {
        WitnessCommand::Init { dir, name, json } => {
            if dir.join(KEY_FILE).exists() {
                anyhow::bail!("{} holds a witness already", dir.display());
            }
            std::fs::create_dir_all(&dir)?;
            let seed = keepwire_records::keys::fresh_key();
            let c = Cosigner::new(&name, &seed)?;
            keepwire_protocol::files::write_private(&dir.join(KEY_FILE), &seed)?;
            std::fs::write(dir.join(NAME_FILE), format!("{name}\n"))?;
            let vkey = c.verifier_key();
            crate::report(
                json,
                serde_json::json!({ "verifier_key": vkey }),
                vkey.clone(),
            )
        }
        WitnessCommand::Key { dir, json } => {
            let vkey = cosigner(&dir)?.verifier_key();
            crate::report(
                json,
                serde_json::json!({ "verifier_key": vkey }),
                vkey.clone(),
            )
        }
        WitnessCommand::Serve { dir, log, listen } => {
            crate::serve::check_listen(&listen, None)?;
            let _claim = crate::serve::owner::claim_dir(
                &dir,
                "witness.lock",
                "keepwire witness",
                "cannot start the witness",
            )?;
            let witness = Witness::new(
                cosigner(&dir)?,
                &log,
                FileState::open(&dir.join(STATE_FILE))?,
            )?;
            let vkey = witness.cosigner().verifier_key();
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            eprintln!(
                "keepwire witness {vkey} on http://{}, following {} log(s)",
                listener.local_addr()?,
                log.len()
            );
            let app = router(Arc::new(Mutex::new(witness)));
            axum::serve(listener, app)
                .with_graceful_shutdown(crate::terminated()?)
                .await?;
            eprintln!("keepwire witness stopped");
            Ok(())
        }
    }
}

type Shared = Arc<Mutex<Witness<FileState>>>;

fn router(witness: Shared) -> Router {
    Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        // Larger bodies are refused before they are read (413).
        .layer(DefaultBodyLimit::max(MAX_REQUEST))
        .with_state(witness)
}

async fn add_checkpoint(State(witness): State<Shared>, body: axum::body::Bytes) -> Response {
    let now_s = keepwire_protocol::clock::Clock::from_env().now_ms() / 1000;
    // The check and the advance are one step under the lock (the spec's
    // race), on a blocking thread: the advance fsyncs.
    let answer = tokio::task::spawn_blocking(move || {
        let mut w = witness.lock().unwrap_or_else(|p| p.into_inner());
        w.add_checkpoint(&body, now_s)
    })
    .await;
    let answer = match answer {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "the witness could not record its state");
            return (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response();
        }
        Err(_) => return (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response(),
    };
    let status = StatusCode::from_u16(answer.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match answer {
        Answer::Conflict(Some(_)) => {
            return (
                status,
                [(header::CONTENT_TYPE, "text/x.tlog.size")],
                answer.body(),
            )
                .into_response()
        }
        Answer::Conflict(None) => tracing::warn!(
            "refused a checkpoint of the size last cosigned with another root: a fork"
        ),
        Answer::Unprocessable => {
            tracing::warn!("refused a checkpoint whose consistency proof does not verify")
        }
        _ => {}
    }
    (status, answer.body()).into_response()
}
