use super::*;

fn user(name: &str) -> OwnedUserId {
    format!("@{name}:example.org").try_into().unwrap()
}

#[tokio::test]
async fn positions_become_visible_only_in_order() {
    let stream = EventStream::new(5);
    let a = stream.reserve(1).await.unwrap();
    let b = stream.reserve(2).await.unwrap();
    let c = stream.reserve(1).await.unwrap();
    assert_eq!((a.first(), b.first(), c.first()), (6, 7, 9));

    c.complete(vec![]);
    assert_eq!(stream.current(), 5, "9 done but 6..8 are not");
    a.complete(vec![]);
    assert_eq!(stream.current(), 6);
    b.complete(vec![]);
    assert_eq!(stream.current(), 9, "7, 8 and the earlier 9 become visible together");
}

#[tokio::test]
async fn dropped_reservation_leaves_a_gap_not_a_stall() {
    let stream = EventStream::new(0);
    let a = stream.reserve(1).await.unwrap();
    let b = stream.reserve(1).await.unwrap();
    b.complete(vec![]);
    drop(a);
    assert_eq!(stream.current(), 2);
}

#[tokio::test]
async fn subscribers_wake_when_their_position_becomes_visible() {
    let stream = EventStream::new(0);
    let alice = user("alice");
    let bob = user("bob");
    let mut rx_alice = stream.subscribe(&alice);
    let mut rx_bob = stream.subscribe(&bob);

    let first = stream.reserve(1).await.unwrap();
    let second = stream.reserve(1).await.unwrap();
    second.complete(vec![alice.clone()]);
    assert!(!rx_alice.has_changed().unwrap(), "not visible while 1 is in flight");
    first.complete(vec![bob.clone()]);

    tokio::time::timeout(std::time::Duration::from_secs(1), rx_alice.changed()).await.unwrap().unwrap();
    assert_eq!(*rx_alice.borrow(), 2);
    assert!(rx_bob.has_changed().unwrap());
    assert_eq!(*rx_bob.borrow_and_update(), 2);
}

#[tokio::test]
async fn unrelated_users_are_not_woken() {
    let stream = EventStream::new(0);
    let rx = stream.subscribe(&user("carol"));
    stream.reserve(1).await.unwrap().complete(vec![user("dave")]);
    assert_eq!(stream.current(), 1);
    assert!(!rx.has_changed().unwrap());
}

#[tokio::test]
async fn positions_stay_below_a_persisted_horizon_raised_ahead_of_them() {
    let horizon = Arc::new(MemoryHorizon::default());
    let stream = EventStream::start(100, horizon.clone()).await.unwrap();
    assert_eq!(horizon.get(), 100 + HORIZON_HEADROOM, "raised before anything is handed out");
    // Hand out more than one headroom's worth: every position stays at or below what was
    // persisted when it was handed out.
    for _ in 0..(HORIZON_HEADROOM * 3 / 2) {
        let r = stream.reserve(1).await.unwrap();
        assert!(r.first() <= horizon.get(), "position {} above horizon {}", r.first(), horizon.get());
        r.complete(Vec::new());
    }
    // A big reservation past the horizon waits for a raise instead of passing it.
    let big = stream.reserve(HORIZON_HEADROOM * 2).await.unwrap();
    assert!(big.first() + big.count() - 1 <= horizon.get());
}

#[tokio::test]
async fn a_restarted_stream_starts_above_everything_handed_out() {
    let horizon = Arc::new(MemoryHorizon::default());
    let first = EventStream::start(0, horizon.clone()).await.unwrap();
    let mut highest = 0;
    for _ in 0..50 {
        // Handed out but never written: a client may still have seen a later position.
        let r = first.reserve(1).await.unwrap();
        highest = r.first();
    }
    // The restart recovers from the horizon alone (nothing was stored at those positions).
    let second = EventStream::start(horizon.get(), horizon.clone()).await.unwrap();
    let next = second.reserve(1).await.unwrap();
    assert!(next.first() > highest, "{} reused a position up to {highest}", next.first());
}

#[tokio::test]
async fn a_failing_horizon_refuses_positions_instead_of_passing_it() {
    /// Persists the first raise (at start), fails every later one.
    #[derive(Default)]
    struct FailsAfterStart(std::sync::atomic::AtomicU64);
    impl Horizon for FailsAfterStart {
        fn raise(&self, to: u64) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
            let result = match self.0.compare_exchange(
                0,
                to,
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
            ) {
                Ok(_) => Ok(()),
                Err(_) => Err("disk full".to_owned()),
            };
            Box::pin(std::future::ready(result))
        }
    }
    let horizon = Arc::new(FailsAfterStart::default());
    let stream = EventStream::start(0, horizon.clone()).await.unwrap();
    let persisted = horizon.0.load(std::sync::atomic::Ordering::SeqCst);
    let mut handed_out = 0;
    loop {
        match stream.reserve(1).await {
            Ok(r) => {
                handed_out = r.first();
                assert!(handed_out <= persisted, "{handed_out} handed out above the horizon {persisted}");
            }
            Err(_) => break,
        }
        assert!(handed_out <= persisted + 1, "never stopped");
    }
    assert_eq!(handed_out, persisted, "every persisted position was usable, none beyond");

    struct Broken;
    impl Horizon for Broken {
        fn raise(&self, _: u64) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
            Box::pin(std::future::ready(Err("disk full".to_owned())))
        }
    }
    assert!(EventStream::start(0, Arc::new(Broken)).await.is_err(), "nothing starts without a horizon");
}
