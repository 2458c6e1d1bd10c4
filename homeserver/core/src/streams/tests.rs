use super::*;

fn user(name: &str) -> OwnedUserId {
    format!("@{name}:example.org").try_into().unwrap()
}

#[test]
fn positions_become_visible_only_in_order() {
    let stream = EventStream::new(5);
    let a = stream.reserve(1);
    let b = stream.reserve(2);
    let c = stream.reserve(1);
    assert_eq!((a.first(), b.first(), c.first()), (6, 7, 9));

    c.complete(vec![]);
    assert_eq!(stream.current(), 5, "9 done but 6..8 are not");
    a.complete(vec![]);
    assert_eq!(stream.current(), 6);
    b.complete(vec![]);
    assert_eq!(stream.current(), 9, "7, 8 and the earlier 9 become visible together");
}

#[test]
fn dropped_reservation_leaves_a_gap_not_a_stall() {
    let stream = EventStream::new(0);
    let a = stream.reserve(1);
    let b = stream.reserve(1);
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

    let first = stream.reserve(1);
    let second = stream.reserve(1);
    second.complete(vec![alice.clone()]);
    assert!(!rx_alice.has_changed().unwrap(), "not visible while 1 is in flight");
    first.complete(vec![bob.clone()]);

    tokio::time::timeout(std::time::Duration::from_secs(1), rx_alice.changed()).await.unwrap().unwrap();
    assert_eq!(*rx_alice.borrow(), 2);
    assert!(rx_bob.has_changed().unwrap());
    assert_eq!(*rx_bob.borrow_and_update(), 2);
}

#[test]
fn unrelated_users_are_not_woken() {
    let stream = EventStream::new(0);
    let rx = stream.subscribe(&user("carol"));
    stream.reserve(1).complete(vec![user("dave")]);
    assert_eq!(stream.current(), 1);
    assert!(!rx.has_changed().unwrap());
}
