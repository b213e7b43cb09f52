//! A fresh PostgreSQL schema per end-to-end run (`?options=-c search_path=…` in
//! `DATABASE_URL`), so parallel runs never share tables or leases; dropped with everything in
//! it at the end, also after a failed assertion. Shared by the end-to-end tests that run on
//! PostgreSQL (`mod pg;`).
//!
//! Needs PostgreSQL (`KAKEYA_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`):
//! [`Schema::create`] skips loudly without it, and fails when `CI` is set.

use sqlx::{Connection, Executor, PgConnection};

pub fn pg_url() -> String {
    std::env::var("KAKEYA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn sql(statement: String) -> Result<(), sqlx::Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let mut c = PgConnection::connect(&pg_url()).await?;
            c.execute(statement.as_str()).await?;
            c.close().await
        })
}

pub struct Schema(String);

impl Schema {
    /// `<test>_<pid>_<nanos>`; `None` (after a loud skip note) when PostgreSQL is unreachable
    /// outside CI.
    pub fn create(test: &str) -> Option<Schema> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("{test}_{}_{nanos}", std::process::id());
        match sql(format!("CREATE SCHEMA \"{name}\"")) {
            Ok(()) => Some(Schema(name)),
            Err(e) if std::env::var_os("CI").is_some() => {
                panic!("PostgreSQL at {} unreachable in CI: {e}", pg_url())
            }
            Err(e) => {
                eprintln!(
                    "\n*** SKIP {test}: PostgreSQL at {} unreachable ({e}) ***\n",
                    pg_url()
                );
                None
            }
        }
    }

    pub fn database_url(&self) -> String {
        let sep = if pg_url().contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-c%20search_path%3D{}", pg_url(), self.0)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = sql(format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.0));
    }
}
