//! The accounts of the people who act on the archive, in PostgreSQL
//! (`crate::accounts`): each change written with its leaf, inside the
//! writer's transaction.

use keepwire_schema::pg::tokio_postgres::Row;
use keepwire_schema::pg::Pg;

use super::super::store::Account;
use super::{append, u64_at};
use crate::tlog::Leaf;
use crate::RecordsError;

fn to_account(r: &Row) -> Result<Account, RecordsError> {
    let role: String = r.try_get(1)?;
    Ok(Account {
        name: r.try_get(0)?,
        role: role.parse()?,
        password_hash: r.try_get(2)?,
        created_ms: u64_at(r, 3)?,
        disabled: r.try_get(4)?,
    })
}

pub(super) fn all(pg: &Pg) -> Result<Vec<Account>, RecordsError> {
    pg.query(
        "SELECT name, role, password_hash, created_ms, disabled FROM accounts ORDER BY name",
        &[],
    )?
    .iter()
    .map(to_account)
    .collect()
}

pub(super) fn one(pg: &Pg, name: &str) -> Result<Option<Account>, RecordsError> {
    pg.query(
        "SELECT name, role, password_hash, created_ms, disabled FROM accounts WHERE name=$1",
        &[&name],
    )?
    .first()
    .map(to_account)
    .transpose()
}

/// Inside the writer's transaction: two first admins cannot both be made.
pub(super) fn add(
    pg: &Pg,
    account: &Account,
    only_if_none: bool,
    leaf: &Leaf,
) -> Result<bool, RecordsError> {
    let taken: bool = pg
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM accounts WHERE name=$1 OR $2)",
            &[&account.name, &only_if_none],
        )?
        .try_get(0)?;
    if taken {
        return Ok(false);
    }
    pg.execute(
        "INSERT INTO accounts (name, role, password_hash, created_ms, disabled)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &account.name,
            &account.role.as_str(),
            &account.password_hash,
            &(account.created_ms as i64),
            &account.disabled,
        ],
    )?;
    append(pg, leaf, None)?;
    Ok(true)
}

pub(super) fn set_disabled(
    pg: &Pg,
    name: &str,
    disabled: bool,
    leaf: &Leaf,
) -> Result<bool, RecordsError> {
    let n = pg.execute(
        "UPDATE accounts SET disabled=$2 WHERE name=$1",
        &[&name, &disabled],
    )?;
    if n == 0 {
        return Ok(false);
    }
    append(pg, leaf, None)?;
    Ok(true)
}
