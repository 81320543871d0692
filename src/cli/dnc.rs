//! `asterai dnc`: an organization's do-not-call list. Numbers on it are refused by
//! `asterai call` and `POST /v1/calls`, and skipped by campaigns at dial time.

use std::path::PathBuf;

use anyhow::Context as _;

use super::Context;
use crate::dialer::import::Rejected;

/// The do-not-call list: numbers never to be called.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Add a number (E.164).
    Add {
        /// The number, E.164 (`+15551230005`); spaces, dashes and a `00` prefix are accepted.
        number: String,
        /// Organization (may be left out when there is only one).
        #[arg(long)]
        org: Option<String>,
        /// Why (kept with the entry).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Remove a number.
    Remove {
        /// The number, as `dnc add` took it.
        number: String,
        /// Organization (may be left out when there is only one).
        #[arg(long)]
        org: Option<String>,
    },
    /// List the numbers.
    List {
        /// Organization (may be left out when there is only one).
        #[arg(long)]
        org: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Add the numbers of a file: one per line, or a CSV with a phone (or number) column.
    /// Lines that are not numbers are reported.
    Import {
        /// The file: one number per line (`#` starts a comment), or a CSV with a header row.
        file: PathBuf,
        /// Organization (may be left out when there is only one).
        #[arg(long)]
        org: Option<String>,
    },
}

/// Numbers from a file: the `phone` or `number` column of a CSV (delimited by `,`, `;` or tab,
/// read as the campaign import reads it), else one per line.
pub(crate) fn numbers(text: &str) -> (Vec<String>, Vec<Rejected>) {
    let records = crate::dialer::import::records(text.as_bytes());
    let column = records.first().and_then(|header| {
        header.fields.iter().position(|name| {
            let name = String::from_utf8_lossy(name).trim().to_ascii_lowercase();
            name == "phone" || name == "number"
        })
    });
    let cells: Vec<(usize, String)> = match column {
        Some(c) => records
            .iter()
            .skip(1)
            .map(|r| (r.line, r.fields.get(c).map(|f| String::from_utf8_lossy(f).into_owned()).unwrap_or_default()))
            .collect(),
        None => text.lines().enumerate().map(|(index, line)| (index + 1, line.to_owned())).collect(),
    };
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for (line, cell) in cells {
        let cell = cell.trim().trim_matches('"');
        if cell.is_empty() || cell.starts_with('#') {
            continue;
        }
        match crate::phone::normalize(cell) {
            Some(number) => good.push(number),
            None => bad.push(Rejected { line, reason: format!("{cell:?} is not an E.164 number") }),
        }
    }
    (good, bad)
}

pub fn run(args: Args, context: Context) -> anyhow::Result<()> {
    super::runtime()?.block_on(async {
        let store = super::store(&context.config).await?;
        match args.command {
            Command::Add { number, org, reason } => {
                let org = super::calls::pick_org(&store, org.as_deref()).await?;
                let number = crate::phone::parse(&number).map_err(anyhow::Error::msg)?;
                if store.add_dnc(org.id, &number, reason.as_deref(), "cli").await? {
                    println!("{number} added to {}'s do-not-call list", org.slug);
                } else {
                    println!("{number} was on {}'s do-not-call list already", org.slug);
                }
            }
            Command::Remove { number, org } => {
                let org = super::calls::pick_org(&store, org.as_deref()).await?;
                let number = crate::phone::parse(&number).unwrap_or_else(|_| number.trim().to_owned());
                anyhow::ensure!(
                    store.remove_dnc(org.id, &number).await?,
                    "{number} is not on {}'s do-not-call list",
                    org.slug
                );
                println!("{number} removed from {}'s do-not-call list", org.slug);
            }
            Command::List { org, json } => {
                let org = super::calls::pick_org(&store, org.as_deref()).await?;
                let list = store.list_dnc(org.id).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&list)?);
                } else {
                    for entry in list {
                        println!(
                            "{:<16}  {:<7}  {}  {}",
                            entry.number,
                            entry.source,
                            entry.created_at.format("%Y-%m-%d %H:%M"),
                            entry.reason.unwrap_or_default()
                        );
                    }
                }
            }
            Command::Import { file, org } => {
                let org = super::calls::pick_org(&store, org.as_deref()).await?;
                let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
                let text = String::from_utf8(bytes).map_err(|e| {
                    anyhow::anyhow!(
                        "{}: not valid UTF-8 (byte {}); save it as UTF-8",
                        file.display(),
                        e.utf8_error().valid_up_to()
                    )
                })?;
                let (numbers, rejected) = numbers(&text);
                let added = store.add_dnc_many(org.id, &numbers, "import").await?;
                let new = added.iter().filter(|a| **a).count();
                println!(
                    "{}: {new} added, {} on the list already, {} rejected",
                    super::campaign::count(numbers.len() + rejected.len(), "number"),
                    numbers.len() - new,
                    rejected.len()
                );
                for row in &rejected {
                    println!("  line {}: {}", row.line, row.reason);
                }
                anyhow::ensure!(
                    rejected.is_empty(),
                    "{} rejected (the others were added); fix {} and import the file again",
                    super::campaign::count(rejected.len(), "line"),
                    if rejected.len() == 1 { "it" } else { "them" }
                );
            }
        }
        store.close().await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_from_lists_and_csv() {
        let (good, bad) = super::numbers("+15551230000\n\n# comment\n555\n0044 20 7946 0000\n");
        assert_eq!(good, ["+15551230000", "+442079460000"]);
        assert_eq!((bad.len(), bad[0].line), (1, 4));
        let (good, bad) = super::numbers("name,Phone\nAnn,+15551230001\nBo,nope\n");
        assert_eq!(good, ["+15551230001"]);
        assert_eq!(bad[0].line, 3);
        let (good, bad) = super::numbers("name;number\r\n\"Lee; Ann\";+1 555 123 0001\r\n\r\nBo;x\r\n");
        assert_eq!(good, ["+15551230001"]);
        assert_eq!(bad[0].line, 4);
        let (good, bad) = super::numbers("phone\tname\n+15551230002\t\"Cy\"\n");
        assert_eq!((good, bad.len()), (vec!["+15551230002".to_owned()], 0));
    }
}
