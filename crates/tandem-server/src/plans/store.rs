//! `DATA/plans/<workspace>.redb`: the API-managed plans, which quarantined events were released
//! or discarded, and the violation counters. One file per workspace, like the activate store.

use super::violations::{PlanTotals, ViolationCounter};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use tandem_config::TrackingPlanConfig;

/// Plan id → [`StoredPlan`] JSON.
const PLANS: TableDefinition<&str, &[u8]> = TableDefinition::new("plans");
/// Quarantine log offset → [`Settled`] JSON: the entry is no longer pending.
const SETTLED: TableDefinition<u64, &[u8]> = TableDefinition::new("quarantine_settled");
/// Counter key → [`ViolationCounter`] JSON.
const VIOLATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("violations");
/// Plan id → [`PlanTotals`] JSON.
const TOTALS: TableDefinition<&str, &[u8]> = TableDefinition::new("plan_totals");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Boxed: redb's error is large, and every store call returns this.
    #[error("tracking plan store: {0}")]
    Redb(Box<redb::Error>),
    #[error("tracking plan store: bad JSON: {0}")]
    Json(#[from] serde_json::Error),
}

fn redb_error(error: impl Into<redb::Error>) -> StoreError {
    StoreError::Redb(Box::new(error.into()))
}

/// An API-managed plan with its version and who made it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredPlan {
    pub config: TrackingPlanConfig,
    pub version: u64,
    pub created_at_ms: i64,
    pub created_by: String,
    pub updated_at_ms: i64,
    pub updated_by: String,
}

/// What became of a quarantined event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Settled {
    /// `released` or `discarded`.
    pub status: String,
    pub at_ms: i64,
    pub by: String,
}

pub struct PlanStore {
    database: Database,
}

impl PlanStore {
    pub fn open(path: &Path) -> Result<PlanStore, StoreError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|error| redb_error(redb::StorageError::Io(error)))?;
        }
        let database = Database::create(path).map_err(redb_error)?;
        let write = database.begin_write().map_err(redb_error)?;
        write.open_table(PLANS).map_err(redb_error)?;
        write.open_table(SETTLED).map_err(redb_error)?;
        write.open_table(VIOLATIONS).map_err(redb_error)?;
        write.open_table(TOTALS).map_err(redb_error)?;
        write.commit().map_err(redb_error)?;
        Ok(PlanStore { database })
    }

    pub fn plans(&self) -> Result<Vec<StoredPlan>, StoreError> {
        let read = self.database.begin_read().map_err(redb_error)?;
        let table = read.open_table(PLANS).map_err(redb_error)?;
        let mut plans = Vec::new();
        for row in table.iter().map_err(redb_error)? {
            let (_, value) = row.map_err(redb_error)?;
            plans.push(serde_json::from_slice(value.value())?);
        }
        Ok(plans)
    }

    pub fn put_plan(&self, plan: &StoredPlan) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(plan)?;
        let write = self.database.begin_write().map_err(redb_error)?;
        write
            .open_table(PLANS)
            .map_err(redb_error)?
            .insert(plan.config.id.as_str(), bytes.as_slice())
            .map_err(redb_error)?;
        write.commit().map_err(redb_error)
    }

    /// Removes the plan and its counters.
    pub fn delete_plan(&self, id: &str) -> Result<bool, StoreError> {
        let write = self.database.begin_write().map_err(redb_error)?;
        let existed = {
            let existed = write
                .open_table(PLANS)
                .map_err(redb_error)?
                .remove(id)
                .map_err(redb_error)?
                .is_some();
            write
                .open_table(TOTALS)
                .map_err(redb_error)?
                .remove(id)
                .map_err(redb_error)?;
            let mut violations = write.open_table(VIOLATIONS).map_err(redb_error)?;
            let prefix = format!("{id}{}", super::violations::KEY_SEPARATOR);
            let keys: Vec<String> = violations
                .iter()
                .map_err(redb_error)?
                .filter_map(Result::ok)
                .map(|(key, _)| key.value().to_string())
                .filter(|key| key.starts_with(&prefix))
                .collect();
            for key in keys {
                violations.remove(key.as_str()).map_err(redb_error)?;
            }
            existed
        };
        write.commit().map_err(redb_error)?;
        Ok(existed)
    }

    pub fn settled(&self) -> Result<HashMap<u64, Settled>, StoreError> {
        let read = self.database.begin_read().map_err(redb_error)?;
        let table = read.open_table(SETTLED).map_err(redb_error)?;
        let mut settled = HashMap::new();
        for row in table.iter().map_err(redb_error)? {
            let (key, value) = row.map_err(redb_error)?;
            settled.insert(key.value(), serde_json::from_slice(value.value())?);
        }
        Ok(settled)
    }

    pub fn settled_one(&self, offset: u64) -> Result<Option<Settled>, StoreError> {
        let read = self.database.begin_read().map_err(redb_error)?;
        let table = read.open_table(SETTLED).map_err(redb_error)?;
        match table.get(offset).map_err(redb_error)? {
            Some(value) => Ok(Some(serde_json::from_slice(value.value())?)),
            None => Ok(None),
        }
    }

    /// Marks quarantine entries released or discarded, in one durable commit.
    pub fn settle(&self, entries: &[(u64, Settled)]) -> Result<(), StoreError> {
        let write = self.database.begin_write().map_err(redb_error)?;
        {
            let mut table = write.open_table(SETTLED).map_err(redb_error)?;
            for (offset, settled) in entries {
                let bytes = serde_json::to_vec(settled)?;
                table
                    .insert(*offset, bytes.as_slice())
                    .map_err(redb_error)?;
            }
        }
        write.commit().map_err(redb_error)
    }

    pub fn counters(
        &self,
    ) -> Result<(Vec<ViolationCounter>, HashMap<String, PlanTotals>), StoreError> {
        let read = self.database.begin_read().map_err(redb_error)?;
        let mut counters = Vec::new();
        for row in read
            .open_table(VIOLATIONS)
            .map_err(redb_error)?
            .iter()
            .map_err(redb_error)?
        {
            let (_, value) = row.map_err(redb_error)?;
            counters.push(serde_json::from_slice(value.value())?);
        }
        let mut totals = HashMap::new();
        for row in read
            .open_table(TOTALS)
            .map_err(redb_error)?
            .iter()
            .map_err(redb_error)?
        {
            let (key, value) = row.map_err(redb_error)?;
            totals.insert(
                key.value().to_string(),
                serde_json::from_slice(value.value())?,
            );
        }
        Ok((counters, totals))
    }

    /// Writes the counters changed since the last flush, in one commit.
    pub fn put_counters(
        &self,
        counters: &[(String, ViolationCounter)],
        totals: &[(String, PlanTotals)],
    ) -> Result<(), StoreError> {
        if counters.is_empty() && totals.is_empty() {
            return Ok(());
        }
        let write = self.database.begin_write().map_err(redb_error)?;
        {
            let mut table = write.open_table(VIOLATIONS).map_err(redb_error)?;
            for (key, counter) in counters {
                let bytes = serde_json::to_vec(counter)?;
                table
                    .insert(key.as_str(), bytes.as_slice())
                    .map_err(redb_error)?;
            }
            let mut table = write.open_table(TOTALS).map_err(redb_error)?;
            for (plan, plan_totals) in totals {
                let bytes = serde_json::to_vec(plan_totals)?;
                table
                    .insert(plan.as_str(), bytes.as_slice())
                    .map_err(redb_error)?;
            }
        }
        write.commit().map_err(redb_error)
    }
}
