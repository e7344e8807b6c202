//! `strongroom risk`: the learned model's loop (docs/risk.md, "The model"). `train` fits
//! a model on the labelled assessments of a database and reports how it does on the
//! newest rows against the rules alone; `simulate` runs the same loop on seeded,
//! labelled traffic with planted fraud patterns, with no data needed.

use crate::db::Db;
use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use std::path::PathBuf;
use strongroom_risk::{Features, LabeledRow, SimOptions, TrainOptions, TrainReport};
use strongroom_store::{AssessmentRecord, RiskModelRecord, RiskStore};

#[derive(Subcommand)]
pub enum RiskCommand {
    /// Fit a model on the labelled assessments (`POST /v1/risk/feedback`), hold out the
    /// newest fifth, and print how the model and the rules alone did on it (AUC,
    /// precision, recall) as JSON; with --out, write the model.
    Train {
        #[command(flatten)]
        db: Db,
        /// Only this account's assessments (default: every account's).
        #[arg(long)]
        account: Option<String>,
        /// Where to write the model (JSON).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Put a trained model in service: `shadow` (the default: scored and recorded in each
    /// assessment's reasons, never counted) or, with --active, `active` (it adds up to 60
    /// points). The model that held that state is retired. Servers pick it up within
    /// ten seconds.
    Promote {
        #[command(flatten)]
        db: Db,
        /// The model (`strongroom risk train --out`).
        #[arg(long)]
        model: PathBuf,
        /// Count its points (after a shadow period).
        #[arg(long)]
        active: bool,
    },
    /// Run the loop on simulated traffic (seeded, with planted card testing, takeover
    /// and card cycling): simulate, compute the features, train, and print the report.
    Simulate {
        /// The stream follows from it.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Days of traffic.
        #[arg(long, default_value_t = 14)]
        days: u32,
        /// Where to write the model (JSON).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub async fn run(cmd: RiskCommand) -> Result<()> {
    let (report, out) = match cmd {
        RiskCommand::Promote { db, model, active } => return promote(&db, &model, active).await,
        RiskCommand::Train { db, account, out } => {
            let store = db.open().await?;
            let records = store
                .labelled_assessments(account.as_deref(), 1_000_000)
                .await
                .map_err(|e| anyhow!("cannot read the assessments: {e}"))?;
            let rows = records.iter().map(row).collect::<Result<Vec<_>>>()?;
            (train(&rows)?, out)
        }
        RiskCommand::Simulate { seed, days, out } => {
            let opts = SimOptions {
                seed,
                days,
                ..SimOptions::default()
            };
            let rows = strongroom_risk::features_of(&strongroom_risk::simulate(&opts));
            (train(&rows)?, out)
        }
    };
    // The figures, not the coefficients (those are in --out).
    let summary = serde_json::json!({
        "model_version": report.model.version(),
        "training": report.training,
        "holdout": report.holdout,
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    if let Some(path) = out {
        let json = report.model.to_json()?;
        std::fs::write(&path, json).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!(
            "model {} written to {}",
            report.model.version(),
            path.display()
        );
    }
    Ok(())
}

fn train(rows: &[LabeledRow]) -> Result<TrainReport> {
    strongroom_risk::train(rows, &TrainOptions::default()).map_err(|e| anyhow!("{e}"))
}

/// A stored, labelled assessment as a training row: its features, its label (a
/// chargeback is fraud), and the rules' score at the time.
fn row(r: &AssessmentRecord) -> Result<LabeledRow> {
    let features: Features = serde_json::from_str(&r.features)
        .with_context(|| format!("assessment {}: features", r.id))?;
    let fraud = match r.label.as_deref() {
        Some("fraud" | "chargeback") => true,
        Some("legitimate") => false,
        _ => bail!("assessment {}: no label", r.id),
    };
    Ok(LabeledRow {
        at_ms: r.created_ms,
        features,
        fraud,
        #[allow(clippy::cast_precision_loss)]
        rules_score: r.score as f64,
    })
}

async fn promote(db: &Db, path: &std::path::Path, active: bool) -> Result<()> {
    let json =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    // Loaded before it is stored: a model of another feature schema is refused here.
    let model = strongroom_risk::Model::from_json(&json).map_err(|e| anyhow!("{e}"))?;
    let store = db.open().await?;
    let clock = strongroom_core::SystemClock;
    let state = if active { "active" } else { "shadow" };
    let record = RiskModelRecord {
        version: model.version().to_owned(),
        state: state.to_owned(),
        model: json,
        promoted_ms: strongroom_core::Clock::now_ms(&clock),
    };
    // The promotion is in the audit log (actor `system`), with the write.
    let audit = strongroom_server::audit::Origin::System.scope(&clock, "risk.model_promoted");
    strongroom_server::audit::set_resource(&audit, "risk_model", model.version());
    store
        .audited(&audit)
        .promote_risk_model(&record)
        .await
        .map_err(|e| anyhow!("cannot store the model: {e}"))?;
    println!("model {} is now {state}", model.version());
    Ok(())
}
