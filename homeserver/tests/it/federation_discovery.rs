//! Server discovery through DNS, against a DNS server on loopback that this test runs: a server
//! published only by an SRV record (`_matrix-fed._tcp`, or the older `_matrix._tcp`) is reached at
//! the record's target and port, its certificate is checked against its own name (not the
//! target's), and the target's addresses pass the SSRF guard like any others.

use std::net::{Ipv4Addr, SocketAddr};

use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{
        Name, RData, Record,
        rdata::{A, SRV},
    },
};
use homeserver_core::time::now_millis;
use ruma::{OwnedServerName, UserId, api::federation::query::get_profile_information};
use serde_json::json;
use tokio::net::UdpSocket;

use crate::federation::{TestCa, federated, key_of, name_of};

/// Answers queries for `records` (by name and type) over UDP on loopback; NXDOMAIN otherwise.
async fn dns_server(records: Vec<Record>) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 4096];
        while let Ok((len, from)) = socket.recv_from(&mut buffer).await {
            let Ok(query) = Message::from_vec(&buffer[..len]) else { continue };
            let mut answer = Message::response(query.metadata.id, query.metadata.op_code);
            answer.metadata.authoritative = true;
            answer.metadata.recursion_desired = query.metadata.recursion_desired;
            answer.metadata.recursion_available = true;
            for question in &query.queries {
                answer.add_query(question.clone());
                for record in records
                    .iter()
                    .filter(|r| r.name == *question.name() && r.record_type() == question.query_type())
                {
                    answer.add_answer(record.clone());
                }
            }
            if answer.answers.is_empty() {
                answer.metadata.response_code = ResponseCode::NXDomain;
            }
            let _ = socket.send_to(&answer.to_vec().unwrap(), from).await;
        }
    });
    addr
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn srv(service_name: &str, port: u16, target: &str) -> Record {
    Record::from_rdata(name(service_name), 60, RData::SRV(SRV::new(10, 5, port, name(target))))
}

fn loopback(host: &str) -> Record {
    Record::from_rdata(name(host), 60, RData::A(A(Ipv4Addr::LOCALHOST)))
}

fn port_of(server: &crate::harness::TestServer) -> u16 {
    server.tls_base.as_ref().unwrap().rsplit(':').next().unwrap().parse().unwrap()
}

fn server_name(s: &str) -> OwnedServerName {
    s.try_into().unwrap()
}

#[tokio::test]
async fn servers_published_by_srv_records_are_reached_at_their_targets() {
    let ca = TestCa::create();
    let fed = federated(&ca, |c| c.server_name = "fed.lattice.test".into()).await;
    let legacy = federated(&ca, |c| c.server_name = "legacy.lattice.test".into()).await;
    // The targets are names the certificate does not cover: TLS must check the server's name.
    let dns = dns_server(vec![
        srv("_matrix-fed._tcp.fed.lattice.test.", port_of(&fed), "fed-host.internal."),
        loopback("fed-host.internal."),
        srv("_matrix._tcp.legacy.lattice.test.", port_of(&legacy), "legacy-host.internal."),
        loopback("legacy-host.internal."),
        // A name the certificate does not cover, pointing at a real server: TLS refuses it.
        srv("_matrix-fed._tcp.impostor.test.", port_of(&fed), "fed-host.internal."),
    ])
    .await;
    let nameservers = vec![dns.to_string()];
    let a = federated(&ca, |c| c.federation.nameservers = nameservers.clone()).await;
    let keys = &a.server.federation.keys;
    let now = now_millis() as i64;

    for server in [&fed, &legacy] {
        let key = keys.verify_key(&name_of(server), &key_of(server).key_id(), now).await.unwrap();
        assert_eq!(key.expect("found through SRV").encode(), key_of(server).public_key_base64());
    }
    // A signed request both ways: A finds `fed` through DNS, `fed` finds A by its literal port.
    let bob = fed.register("bob").await;
    let path = format!("/_matrix/client/v3/profile/{}/displayname", bob.user_id);
    assert_eq!(fed.put(&path, Some(&bob.token), json!({ "displayname": "Bob" })).await.0, 200);
    let user = UserId::parse(&bob.user_id).unwrap();
    let request = get_profile_information::v1::Request::new(user);
    let profile = a.server.federation.client.send(&name_of(&fed), request).await.expect("answered");
    assert_eq!(profile.get("displayname"), Some(&json!("Bob")));

    let impostor = server_name("impostor.test");
    assert!(keys.verify_key(&impostor, &key_of(&fed).key_id(), now).await.unwrap().is_none());
    let unlisted = server_name("unlisted.lattice.test");
    assert!(keys.verify_key(&unlisted, &key_of(&fed).key_id(), now).await.unwrap().is_none());

    // Without `allow_private_destinations`, an SRV target on loopback is as unreachable as a
    // loopback address named directly.
    let guarded = federated(&ca, |c| {
        c.federation.nameservers = nameservers;
        c.testing.allow_private_destinations = false;
    })
    .await;
    let keys = &guarded.server.federation.keys;
    assert!(keys.verify_key(&name_of(&fed), &key_of(&fed).key_id(), now).await.unwrap().is_none());
}

#[tokio::test]
async fn only_srv_found_urls_follow_srv_routes() {
    let dns = dns_server(vec![
        srv("_matrix-fed._tcp.both.lattice.test.", 8448, "target.internal."),
        loopback("target.internal."),
        Record::from_rdata(name("both.lattice.test."), 60, RData::A(A(Ipv4Addr::new(192, 0, 2, 7)))),
    ])
    .await;
    let resolver = federation::client::dns::Dns::new(&[dns]).unwrap();
    let target = resolver.srv("both.lattice.test").await.expect("an SRV record");
    assert_eq!((target.host.as_str(), target.port), ("target.internal", 8448));
    // An SRV-found URL goes to the target; `.well-known` or `both.lattice.test:443`, which
    // name the host itself, go to its own address whatever SRV lookups happened.
    let routed = resolver.addresses("both.lattice.test", true).await.unwrap();
    assert_eq!(routed, [std::net::IpAddr::from(Ipv4Addr::LOCALHOST)]);
    let own = resolver.addresses("both.lattice.test", false).await.unwrap();
    assert_eq!(own, [std::net::IpAddr::from(Ipv4Addr::new(192, 0, 2, 7))]);
    // Without a record the name has no route any more.
    assert!(resolver.srv("gone.lattice.test").await.is_none());
}

#[tokio::test]
async fn nameservers_that_are_not_addresses_keep_the_server_from_starting() {
    let mut config = homeserver::config::Config::default();
    config.federation.nameservers = vec!["dns.lattice.test".into()];
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("federation.nameservers"), "{err}");
    config.federation.nameservers = vec!["127.0.0.1".into(), "[::1]:5353".into()];
    let addrs = config.federation.nameserver_addresses().unwrap();
    assert_eq!(addrs, ["127.0.0.1:53".parse().unwrap(), "[::1]:5353".parse().unwrap()]);
}
