//! Two matrix-sdk clients with end-to-end encryption on (Olm/Megolm by vodozemac) against a
//! running Lattice: they register, share an encrypted room and each decrypts what the other
//! sends (keys uploaded, queried and claimed, the room key sent to-device); then Alice
//! bootstraps cross-signing (answering the server's password challenge if it asks) and creates
//! a key backup that her room key reaches.
//!
//! Usage: `sdk-e2ee http://127.0.0.1:8008` (a server with open registration and no rate
//! limits). Exit status 0 when every check passed.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use matrix_sdk::{
    Client,
    config::SyncSettings,
    ruma::{
        OwnedRoomId,
        api::client::{
            account::register::v3::Request as RegistrationRequest,
            room::create_room::v3::Request as CreateRoomRequest, uiaa,
        },
        events::room::message::{OriginalSyncRoomMessageEvent, RoomMessageEventContent},
    },
};
use tokio::sync::mpsc;

async fn register(base: &str, name: &str) -> Result<Client> {
    let client = Client::builder().homeserver_url(base).build().await?;
    let mut request = RegistrationRequest::new();
    request.username = Some(name.to_owned());
    request.password = Some(format!("{name}-password"));
    let err = client.matrix_auth().register(request.clone()).await.expect_err("a UIA challenge");
    let info = err.as_uiaa_response().context("a UIA response")?.clone();
    let mut dummy = uiaa::Dummy::new();
    dummy.session = info.session;
    request.auth = Some(uiaa::AuthData::Dummy(dummy));
    client.matrix_auth().register(request).await?;
    Ok(client)
}

async fn sync(client: &Client) -> Result<()> {
    client.sync_once(SyncSettings::new().timeout(Duration::from_millis(500))).await?;
    Ok(())
}

/// Decrypted message bodies the client sees, as they arrive.
fn inbox(client: &Client) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    client.add_event_handler(move |ev: OriginalSyncRoomMessageEvent| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(ev.content.body().to_owned());
        }
    });
    rx
}

/// Syncs `client` until `body` arrived decrypted.
async fn receive(client: &Client, inbox: &mut mpsc::UnboundedReceiver<String>, body: &str) -> Result<()> {
    for _ in 0..30 {
        sync(client).await?;
        while let Ok(got) = inbox.try_recv() {
            if got == body {
                return Ok(());
            }
        }
    }
    bail!("{:?} never decrypted {body:?}", client.user_id())
}

async fn run(base: &str) -> Result<()> {
    let tag = std::process::id();
    let alice = register(base, &format!("sdka{tag}")).await?;
    let bob = register(base, &format!("sdkb{tag}")).await?;
    let (mut alice_inbox, mut bob_inbox) = (inbox(&alice), inbox(&bob));
    // The first syncs publish each device's keys.
    sync(&alice).await?;
    sync(&bob).await?;

    let mut request = CreateRoomRequest::new();
    request.invite = vec![bob.user_id().context("bob")?.to_owned()];
    let room = alice.create_room(request).await?;
    room.enable_encryption().await?;
    let room_id: OwnedRoomId = room.room_id().to_owned();
    sync(&bob).await?;
    bob.join_room_by_id(&room_id).await?;
    sync(&alice).await?;
    sync(&bob).await?;
    println!("PASS encrypted room shared");

    let room = alice.get_room(&room_id).context("alice's room")?;
    ensure!(room.latest_encryption_state().await?.is_encrypted(), "the room is not encrypted");
    room.send(RoomMessageEventContent::text_plain("the eagle lands at noon")).await?;
    receive(&bob, &mut bob_inbox, "the eagle lands at noon").await?;
    println!("PASS bob decrypts alice's message");
    let bobs_room = bob.get_room(&room_id).context("bob's room")?;
    bobs_room.send(RoomMessageEventContent::text_plain("copy that")).await?;
    receive(&alice, &mut alice_inbox, "copy that").await?;
    println!("PASS alice decrypts bob's reply");

    let encryption = alice.encryption();
    if let Err(err) = encryption.bootstrap_cross_signing(None).await {
        let info = err.as_uiaa_response().context("a UIA challenge")?.clone();
        let user = alice.user_id().context("alice")?.localpart().to_owned();
        let mut password = uiaa::Password::new(
            uiaa::UserIdentifier::Matrix(uiaa::MatrixUserIdentifier::new(user.clone())),
            format!("{user}-password"),
        );
        password.session = info.session;
        encryption.bootstrap_cross_signing(Some(uiaa::AuthData::Password(password))).await?;
    }
    let status = encryption.cross_signing_status().await.context("cross-signing status")?;
    ensure!(status.has_master && status.has_self_signing && status.has_user_signing, "{status:?}");
    println!("PASS cross-signing bootstrapped");

    let backups = encryption.backups();
    backups.create().await?;
    backups.wait_for_steady_state().await?;
    ensure!(backups.exists_on_server().await?, "no backup on the server");
    println!("PASS key backup created and the room key backed up");
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let Some(base) = std::env::args().nth(1) else {
        eprintln!("usage: sdk-e2ee <server base URL>");
        return std::process::ExitCode::from(2);
    };
    match run(&base).await {
        Ok(()) => {
            println!("all checks passed");
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            println!("FAIL {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
