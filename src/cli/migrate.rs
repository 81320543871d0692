//! `asterai migrate`: applies the database migrations.

use super::Context;

/// Apply the database migrations (asterai serve also does this at start-up).
///
/// Creates the embedded SQLite file if needed. Safe to run any number of times.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, context: Context) -> anyhow::Result<()> {
    super::runtime()?.block_on(async {
        use anyhow::Context as _;
        context.config.prepare_data_dir()?;
        let store = crate::store::Store::connect(&context.config.store_options())
            .await
            .context("opening the database (database.url)")?;
        let ran = store.migrate().await.context("migrating the database")?;
        let applied = store.applied_migrations().await?;
        println!(
            "{}: applied {ran} migration(s); the database is at migration {applied} of {}",
            store.backend(),
            store.known_migrations()
        );
        store.close().await;
        Ok(())
    })
}
