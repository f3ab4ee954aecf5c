//! Reads of the calendar store that walk a whole prefix do it a page at a
//! time (`Store::scan`), against a real agenda-db: the user search reads
//! every account, and at 200,000 people one read of them all was over the
//! agenda-db client's 64 MiB (docs/GROWTH.md, Found 3). Here the accounts
//! span several pages, and the answer must be what one read would give.
//! Run: `cargo test -p agenda-tests --test store_pages`.

use agenda_calendar::keys;
use agenda_calendar::model::UserRecord;
use agenda_calendar::store::{Batch, Store, SCAN_PAGE};
use agenda_tests::cluster::{Cluster, Options};
use anyhow::{ensure, Result};
use uuid::Uuid;

/// Two full pages and part of a third.
const PEOPLE: usize = 2 * SCAN_PAGE + 345;
const PER_TXN: usize = 250;

fn person(i: usize) -> UserRecord {
    // Every 97th has "Needle" in the display name only; the last few have
    // it in the username only; keys are by random id, so the matches lie
    // in any page and in no order.
    let username = if i >= PEOPLE - 3 {
        format!("needle_{i:05}")
    } else {
        format!("p{i:05}")
    };
    let display_name = if i.is_multiple_of(97) {
        format!("Haystack Needle {i}")
    } else {
        format!("Person {i}")
    };
    UserRecord {
        id: Uuid::new_v4(),
        email: format!("{username}@pages.example"),
        username,
        display_name,
        time_zone: "UTC".into(),
        password_hash: String::new(),
        created_at: chrono::Utc::now(),
        add_me: Default::default(),
        admin: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_search_reads_every_account_in_pages() -> Result<()> {
    let c = Cluster::start(Options {
        size: 1,
        ..Options::default()
    })
    .await?;
    let store = Store::new(c.client());
    let people: Vec<UserRecord> = (0..PEOPLE).map(person).collect();
    for chunk in people.chunks(PER_TXN) {
        let mut batch = Batch::default();
        for u in chunk {
            batch
                .put(&keys::user(u.id), u)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
        ensure!(
            store
                .commit(batch)
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
            "a batch was refused"
        );
    }

    let search = |q: &'static str| {
        let store = store.clone();
        async move {
            let found = store
                .search_users(q)
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            Ok::<Vec<String>, anyhow::Error>(found.into_iter().map(|u| u.username).collect())
        }
    };
    let expect = |keep: &dyn Fn(&UserRecord) -> bool| {
        let mut names: Vec<String> = people
            .iter()
            .filter(|u| keep(u))
            .map(|u| u.username.clone())
            .collect();
        names.sort();
        names.truncate(50);
        names
    };

    // Display names and usernames, in any case, from every page.
    let needles = expect(&|u| u.display_name.contains("Needle") || u.username.contains("needle"));
    ensure!(
        needles.len() == PEOPLE.div_ceil(97) + 3,
        "the data has {} needles",
        needles.len()
    );
    ensure!(
        search("NEEDLE").await? == needles,
        "the search for NEEDLE found another set"
    );
    // More matches than the answer holds: the first 50 by username, not the
    // first 50 read.
    let many = expect(&|u| u.username.contains('3'));
    ensure!(many.len() == 50);
    ensure!(
        search("3").await? == many,
        "the search for 3 is not the first 50 by username"
    );
    // The last account of the last page.
    let last = &people[PEOPLE - 1].username;
    ensure!(
        search("needle_0").await?.last() == Some(last),
        "the last account was not read"
    );
    Ok(())
}
