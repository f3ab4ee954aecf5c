//! Reads of the calendar store that must not grow with the whole store or
//! a person's whole history, against a real agenda-db (docs/GROWTH.md):
//! the user search reads the spans of the words typed (it read every
//! account, and at 200,000 people one read of them all was over the
//! agenda-db client's 64 MiB, Found 3), a person's notifications are kept to the newest
//! `KEEP` (as they arrive, and when read) and caught up as a span (Found 4), and their answered
//! invitations to the newest `KEEP_ANSWERED_INVITATIONS` (as they are answered, and when
//! read; Found 8); a deleted account's session key, which every gateway keeps, is forgotten
//! once none of its tokens can be alive (Found 9).
//! Run: `cargo test -p agenda-tests --test store_pages`.

use agenda_calendar::api::{CreateGroupRequest, InviteRequest, UpdateMeRequest};
use agenda_calendar::keys;
use agenda_calendar::model::{AddMe, Invitation, InvitationStatus, Notification, UserRecord};
use agenda_calendar::rules::{self, KEEP_ANSWERED_INVITATIONS};
use agenda_calendar::store::notifications::{self, KEEP};
use agenda_calendar::store::sessions::ENDED_SESSION_KEEP;
use agenda_calendar::store::users::{index_name_words, NewUser, SEARCH_LIMIT};
use agenda_calendar::store::{Batch, Store, SCAN_PAGE};
use agenda_tests::cluster::{Cluster, Options};
use anyhow::{ensure, Result};
use serde_json::json;
use uuid::Uuid;

/// The calendar's errors as anyhow's.
fn api(e: agenda_calendar::ApiError) -> anyhow::Error {
    anyhow::anyhow!("{e:?}")
}

/// A one-node agenda-db and a calendar store over it (kept while the
/// cluster value lives).
async fn one_node() -> Result<(Cluster, Store)> {
    let c = Cluster::start(Options {
        size: 1,
        ..Options::default()
    })
    .await?;
    let store = Store::new(c.client());
    Ok((c, store))
}

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

/// The accounts written in the test's first transactions are indexed as
/// `Store::create_user` does; the rest as a replica of layout 5 wrote
/// them, without words.
const INDEXED: usize = 8 * PER_TXN;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_search_reads_the_words_typed_and_stragglers_are_indexed() -> Result<()> {
    let (_cluster, store) = one_node().await?;
    let people: Vec<UserRecord> = (0..PEOPLE).map(person).collect();
    for (n, chunk) in people.chunks(PER_TXN).enumerate() {
        let mut batch = Batch::default();
        for u in chunk {
            batch.put(&keys::user(u.id), u).map_err(api)?;
            if n * PER_TXN < INDEXED {
                index_name_words(&mut batch, u);
            }
        }
        ensure!(
            store.commit(batch).await.map_err(api)?,
            "a batch was refused"
        );
    }

    let search = |q: &'static str| {
        let store = store.clone();
        async move {
            let found = store.search_users(q).await.map_err(api)?;
            Ok::<Vec<String>, anyhow::Error>(found.into_iter().map(|u| u.username).collect())
        }
    };
    // The first 50 by username of `among` that `q` finds.
    let expect = |q: &str, among: &[UserRecord]| {
        let query = rules::search_words(q);
        let mut names: Vec<String> = among
            .iter()
            .filter(|u| rules::found_by(&query, u))
            .map(|u| u.username.clone())
            .collect();
        names.sort();
        names.truncate(SEARCH_LIMIT);
        names
    };

    // Only the indexed accounts are found...
    let needles = expect("NEEDLE", &people[..INDEXED]);
    ensure!(needles.len() == INDEXED.div_ceil(97), "{needles:?}");
    ensure!(search("NEEDLE").await? == needles, "the indexed needles");
    // ...until the walk that every agenda-users start runs indexes the rest.
    let walked = store.refile_stragglers().await.map_err(api)?;
    ensure!(walked == PEOPLE - INDEXED, "the walk indexed {walked}");
    ensure!(
        store.refile_stragglers().await.map_err(api)? == 0,
        "a second walk indexed more"
    );

    // Display names and usernames, in any case, from every part.
    let needles = expect("NEEDLE", &people);
    ensure!(
        needles.len() == PEOPLE.div_ceil(97) + 3,
        "the data has {} needles",
        needles.len()
    );
    ensure!(
        search("NEEDLE").await? == needles,
        "the search for NEEDLE found another set"
    );
    ensure!(search("needle_0").await? == expect("needle_0", &people));
    // More matches than the answer holds: the first 50 by username.
    let many = expect("p0", &people);
    ensure!(many.len() == SEARCH_LIMIT && many[0] == "p00000");
    ensure!(search("p0").await? == many, "the search for p0");
    // "person" names nearly everyone; "12" few: the answer is still exact.
    let few = expect("Person 12", &people);
    ensure!(few.len() == SEARCH_LIMIT && few[0] == "p00012", "{few:?}");
    ensure!(
        search("Person 12").await? == few,
        "the search for Person 12"
    );
    // Words begin, they are not found inside ("eedle" is in no word's start).
    ensure!(search("eedle").await?.is_empty());
    // A word longer than any name begins none (and is no key to read).
    let long = "n".repeat(5_000);
    ensure!(store.search_users(&long).await.map_err(api)?.is_empty());
    // No letter or digit: no word, no one; many words: the longest read.
    ensure!(search("-_- !").await?.is_empty());
    let nine = search("haystack needle 97 h ha hay hays hayst haysta").await?;
    ensure!(nine == ["p00097", "p00970"], "{nine:?}"); // 970 begins with 97
                                                       // A renamed person is found by the new name only.
    let renamed = &people[5];
    let req: UpdateMeRequest = serde_json::from_value(json!({"display_name": "Zebra Quagga"}))?;
    store
        .update_user(renamed.id, req, None)
        .await
        .map_err(api)?;
    ensure!(search("quagga").await? == std::slice::from_ref(&renamed.username));
    ensure!(!search("Person 5").await?.contains(&renamed.username));
    Ok(())
}

/// The `i` each notification was made with.
// The notifications below go 250 to a transaction: each trims.
const _: () = assert!(250 >= notifications::TRIM_ONE_IN);

fn order(items: &[Notification]) -> Vec<u64> {
    items
        .iter()
        .map(|n| n.data["i"].as_u64().unwrap_or(u64::MAX))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persons_notifications_are_kept_to_the_newest_and_caught_up_as_a_span() -> Result<()> {
    let (_cluster, store) = one_node().await?;
    let user = Uuid::new_v4();
    // Notifications `from..to` for `who`, 250 to a transaction: through
    // `notifications::add` (`trimmed`), or written as a replica of the
    // version before trims on add did, during a rolling upgrade.
    let add_for = |who: Uuid, from: usize, to: usize, trimmed: bool| {
        let store = store.clone();
        async move {
            for a in (from..to).step_by(250) {
                let mut batch = Batch::default();
                for i in a..(a + 250).min(to) {
                    let data = json!({ "i": i });
                    if trimmed {
                        notifications::add(&mut batch, who, "rsvp", data).map_err(api)?;
                    } else {
                        let n = Notification {
                            id: Uuid::now_v7(),
                            kind: "rsvp".into(),
                            created_at: chrono::Utc::now(),
                            read: false,
                            data,
                        };
                        batch.put(&keys::notification(who, n.id), &n).map_err(api)?;
                    }
                }
                ensure!(
                    store.commit(batch).await.map_err(api)?,
                    "a batch was refused"
                );
            }
            Ok::<(), anyhow::Error>(())
        }
    };
    let add = |from: usize, to: usize| add_for(user, from, to, true);
    let stored_of = |who: Uuid| {
        let store = store.clone();
        async move {
            Ok::<usize, anyhow::Error>(
                store
                    .list::<Notification>(&keys::notifications(who))
                    .await
                    .map_err(api)?
                    .len(),
            )
        }
    };
    let stored = || stored_of(user);

    // A person who never reads keeps the newest KEEP: a batch of
    // TRIM_ONE_IN or more for one person trims their list as it commits
    // (fewer do when one of them is drawn, one in TRIM_ONE_IN).
    let unread = Uuid::new_v4();
    add_for(unread, 0, 3 * KEEP, true).await?;
    ensure!(
        stored_of(unread).await? == KEEP,
        "{} kept by one who never reads, wanted {KEEP}",
        stored_of(unread).await?
    );
    ensure!(store.trim_notifications(unread).await.map_err(api)? == 0);
    let newest = store.notifications_after(unread, None).await.map_err(api)?;
    ensure!(
        order(&newest).first() == Some(&(2 * KEEP as u64)),
        "the oldest kept is not the right one"
    );

    // Written untrimmed (a replica of the version before), a listing
    // trims them.
    let total = KEEP + 250;
    add_for(user, 0, total, false).await?;
    ensure!(stored().await? == total);

    // A listing keeps the newest KEEP and deletes the rest.
    let (first, mut next) = store
        .notifications(user, false, 200, None)
        .await
        .map_err(api)?;
    let want: Vec<u64> = (total - 200..total).rev().map(|i| i as u64).collect();
    ensure!(
        order(&first) == want,
        "the first page is {:?}",
        &order(&first)[..5]
    );
    ensure!(
        stored().await? == KEEP,
        "{} stored after a listing, wanted {KEEP}",
        stored().await?
    );
    let mut seen = first.len();
    while let Some(before) = next {
        let (page, more) = store
            .notifications(user, false, 200, Some(before))
            .await
            .map_err(api)?;
        seen += page.len();
        next = more;
        if next.is_none() {
            ensure!(
                order(&page).last() == Some(&((total - KEEP) as u64)),
                "the oldest kept is not the right one"
            );
        }
    }
    ensure!(seen == KEEP, "the pages held {seen}");

    // A stream's catch-up: what came after the one it saw last, oldest first.
    let tenth = &first[9];
    let after = store
        .notifications_after(user, Some(tenth.id))
        .await
        .map_err(api)?;
    ensure!(order(&after) == (total - 9..total).map(|i| i as u64).collect::<Vec<_>>());
    let from_start = store.notifications_after(user, None).await.map_err(api)?;
    ensure!(from_start.len() == KEEP && order(&from_start)[0] == (total - KEEP) as u64);

    // "Mark all read" trims too, and marks what is kept.
    add(total, total + 40).await?;
    ensure!(store.mark_all_read(user).await.map_err(api)? == KEEP);
    ensure!(stored().await? == KEEP);
    let (unread, _) = store
        .notifications(user, true, 200, None)
        .await
        .map_err(api)?;
    ensure!(unread.is_empty(), "{} still unread", unread.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persons_answered_invitations_are_kept_to_the_newest() -> Result<()> {
    let (_cluster, store) = one_node().await?;
    let user = Uuid::new_v4();
    let t0 = chrono::Utc::now() - chrono::Duration::days(30);
    // Oldest first: 350 answered, a pending one every 25th among them.
    let all: Vec<Invitation> = (0..350)
        .map(|i| Invitation {
            id: Uuid::new_v4(),
            group_id: Uuid::new_v4(),
            group_name: format!("g{i}"),
            invited_by: Uuid::new_v4(),
            invitee_id: user,
            rank: 1,
            status: match i % 25 {
                0 => InvitationStatus::Pending,
                1 => InvitationStatus::Revoked,
                2..=12 => InvitationStatus::Accepted,
                _ => InvitationStatus::Declined,
            },
            created_at: t0 + chrono::Duration::minutes(i),
        })
        .collect();
    for chunk in all.chunks(100) {
        let mut batch = Batch::default();
        for inv in chunk {
            batch
                .put(&keys::invitation(inv.id), inv)
                .map_err(api)?
                .put_raw(&keys::user_invitation(user, inv.id), Vec::new());
        }
        ensure!(
            store.commit(batch).await.map_err(api)?,
            "a batch was refused"
        );
    }
    let pending = all
        .iter()
        .filter(|i| i.status == InvitationStatus::Pending)
        .count();
    let stored = || {
        let store = store.clone();
        async move {
            Ok::<usize, anyhow::Error>(
                store
                    .list::<Invitation>("/agenda/invitations/")
                    .await
                    .map_err(api)?
                    .len(),
            )
        }
    };

    let listed = store.invitations(user).await.map_err(api)?;
    // Every pending one, and the newest KEEP_ANSWERED_INVITATIONS answered.
    let mut want: Vec<&Invitation> = all
        .iter()
        .rev()
        .filter(|i| i.status != InvitationStatus::Pending)
        .take(KEEP_ANSWERED_INVITATIONS)
        .chain(all.iter().filter(|i| i.status == InvitationStatus::Pending))
        .collect();
    want.sort_by_key(|i| std::cmp::Reverse(i.created_at));
    let ids = |v: &[&Invitation]| v.iter().map(|i| i.id).collect::<Vec<_>>();
    ensure!(
        ids(&listed.iter().collect::<Vec<_>>()) == ids(&want),
        "listed {} (wanted {} pending and {KEEP_ANSWERED_INVITATIONS} answered, newest first)",
        listed.len(),
        pending
    );
    let kept = pending + KEEP_ANSWERED_INVITATIONS;
    ensure!(
        stored().await? == kept,
        "{} records after a listing",
        stored().await?
    );
    let indexed = store
        .indexed_ids(&keys::user_invitations(user))
        .await
        .map_err(api)?;
    ensure!(indexed.len() == kept, "{} left in the index", indexed.len());
    let again = store.invitations(user).await.map_err(api)?;
    ensure!(again.len() == kept, "a second listing has {}", again.len());
    Ok(())
}

/// An account made through the store (the password hash is not checked
/// here).
async fn account(store: &Store, username: &str) -> Result<UserRecord> {
    let new = NewUser {
        username: username.to_string(),
        email: format!("{username}@pages.example"),
        password: String::new(),
        display_name: username.to_string(),
        time_zone: "UTC".into(),
        add_me: AddMe::default(),
    };
    store.create_user(new, "-".into()).await.map_err(api)
}

#[tokio::test]
async fn answered_invitations_are_trimmed_as_they_are_answered_and_a_deleted_group_withdraws_its_own(
) -> Result<()> {
    let (_cluster, store) = one_node().await?;
    let owner = account(&store, "owner").await?;
    let invitee = account(&store, "invitee").await?;
    let group = store
        .create_group(
            owner.id,
            CreateGroupRequest {
                name: "often".into(),
                description: None,
                kind: "flat".into(),
                parent_id: None,
            },
        )
        .await
        .map_err(api)?;
    let invite = || {
        store.invite(
            owner.id,
            group.id,
            InviteRequest {
                username: invitee.username.clone(),
                rank: None,
            },
        )
    };
    // Invited and declining, again and again, and never listing them.
    let mut declined = Vec::new();
    for _ in 0..KEEP_ANSWERED_INVITATIONS + 30 {
        let inv = invite().await.map_err(api)?;
        store
            .answer_invitation(invitee.id, inv.id, false)
            .await
            .map_err(api)?;
        declined.push(inv.id);
    }
    let pending = invite().await.map_err(api)?;
    let indexed = || async {
        let mut ids = store
            .indexed_ids(&keys::user_invitations(invitee.id))
            .await
            .map_err(api)?;
        ids.sort();
        Ok::<Vec<Uuid>, anyhow::Error>(ids)
    };
    let mut want: Vec<Uuid> = declined[declined.len() - KEEP_ANSWERED_INVITATIONS..].to_vec();
    want.push(pending.id);
    want.sort();
    ensure!(
        indexed().await? == want,
        "kept {} invitations, not the pending one and the newest {KEEP_ANSWERED_INVITATIONS} answered",
        indexed().await?.len()
    );
    let records = store
        .list::<Invitation>("/agenda/invitations/")
        .await
        .map_err(api)?;
    ensure!(
        records.len() == want.len(),
        "{} invitation records left",
        records.len()
    );

    // The group goes: its pending invitation is withdrawn and the invitee
    // told, and the oldest answered one makes room.
    store.delete_group(owner.id, group.id).await.map_err(api)?;
    let listed = store.invitations(invitee.id).await.map_err(api)?;
    ensure!(
        listed.len() == KEEP_ANSWERED_INVITATIONS
            && listed[0].id == pending.id
            && listed.iter().all(|i| i.status != InvitationStatus::Pending),
        "after the group's deletion: {} listed, {} pending, the newest {} not the withdrawn one",
        listed.len(),
        listed
            .iter()
            .filter(|i| i.status == InvitationStatus::Pending)
            .count(),
        listed[0].id
    );
    ensure!(
        !listed
            .iter()
            .any(|i| i.id == declined[declined.len() - KEEP_ANSWERED_INVITATIONS]),
        "the oldest answered one was kept"
    );
    let told = store
        .notifications_after(invitee.id, None)
        .await
        .map_err(api)?;
    ensure!(
        told.iter()
            .any(|n| n.kind == "invitation_revoked" && n.data["invitation_id"] == json!(pending.id)),
        "the invitee was not told of the withdrawal"
    );

    // One left pending for a group already gone (as an earlier version's
    // deletion left them): answering it withdraws it, and says why.
    let stray = Invitation {
        id: Uuid::new_v4(),
        group_id: Uuid::new_v4(),
        group_name: "gone".into(),
        invited_by: owner.id,
        invitee_id: invitee.id,
        rank: 1,
        status: InvitationStatus::Pending,
        created_at: chrono::Utc::now(),
    };
    let mut batch = Batch::default();
    batch
        .put(&keys::invitation(stray.id), &stray)
        .map_err(api)?
        .put_raw(&keys::user_invitation(invitee.id, stray.id), Vec::new());
    ensure!(
        store.commit(batch).await.map_err(api)?,
        "the stray was refused"
    );
    let refused = store.answer_invitation(invitee.id, stray.id, true).await;
    ensure!(
        matches!(&refused, Err(e) if e.status == 409),
        "answering for a group that is gone: {refused:?}"
    );
    let listed = store.invitations(invitee.id).await.map_err(api)?;
    ensure!(
        listed.iter().all(|i| i.status != InvitationStatus::Pending),
        "the stray is still pending"
    );
    Ok(())
}

#[tokio::test]
async fn a_deleted_accounts_session_key_is_forgotten_once_no_token_of_it_can_live() -> Result<()> {
    let (_cluster, store) = one_node().await?;
    let gone = account(&store, "gone").await?;
    let stays = account(&store, "stays").await?;
    store.end_sessions(stays.id).await.map_err(api)?;
    store.delete_user(gone.id).await.map_err(api)?;
    let generation = |u: Uuid| {
        let store = store.clone();
        async move { store.session_generation(u).await.map_err(api) }
    };
    ensure!(
        generation(gone.id).await? == (1, true),
        "the deletion did not end the account's sessions"
    );
    // Too recent: every gateway must still refuse its tokens.
    let kept = store
        .forget_ended_sessions(ENDED_SESSION_KEEP)
        .await
        .map_err(api)?;
    ensure!(
        kept == 0 && generation(gone.id).await? == (1, true),
        "forgotten {kept} too early"
    );
    // Once older than that: the key and its entry go; a living account's
    // key (its generation moved) stays.
    let forgotten = store
        .forget_ended_sessions(std::time::Duration::ZERO)
        .await
        .map_err(api)?;
    ensure!(forgotten == 1, "forgot {forgotten}");
    ensure!(
        generation(gone.id).await? == (0, false),
        "the deleted account's key is still there"
    );
    let left = store.keys(keys::ENDED_SESSIONS, 0).await.map_err(api)?;
    ensure!(left.is_empty(), "{} entries left", left.len());
    ensure!(
        generation(stays.id).await? == (1, false),
        "a living account's generation was touched"
    );

    // One deleted by a replica of layout 6 (no entry): filed by the
    // straggler walk every start runs (and the upgrade), then forgotten.
    let old = Uuid::new_v4();
    let mut batch = Batch::default();
    batch.put_raw(&keys::session(old), keys::SESSION_DELETED.to_vec());
    ensure!(store.commit(batch).await.map_err(api)?, "refused");
    store.refile_stragglers().await.map_err(api)?;
    let filed = store.keys(keys::ENDED_SESSIONS, 0).await.map_err(api)?;
    ensure!(
        filed.len() == 1 && keys::last_id(&filed[0].key) == Some(old),
        "{} entries filed",
        filed.len()
    );
    ensure!(
        store
            .forget_ended_sessions(std::time::Duration::ZERO)
            .await
            .map_err(api)?
            == 1
            && generation(old).await? == (0, false),
        "the older replica's deletion was not forgotten"
    );
    Ok(())
}
