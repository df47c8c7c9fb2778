//! Tenant isolation: `share: tenant` keeps each tenant's audio to itself (anonymous callers are
//! one tenant of their own), `share: global` gives everyone the same audio.

use crate::common::gateway::Gateway;
use crate::common::sim::Sim;
use crate::support::{cached, requests, send, sft, sha256_hex, FAST};

fn auth_yaml() -> String {
    let digest = |token: &str| sha256_hex(token.as_bytes());
    format!(
        "  auth:\n    allow_anonymous: true\n    tokens:\n      - {{ name: a1, sha256: \"{}\", tenant: school-a }}\n      - {{ name: a2, sha256: \"{}\", tenant: school-a }}\n      - {{ name: b1, sha256: \"{}\", tenant: school-b }}\n",
        digest("token-a1"),
        digest("token-a2"),
        digest("token-b1"),
    )
}

const TOKEN_A1: (&str, &str) = ("Authorization", "Bearer token-a1");
const TOKEN_A2: (&str, &str) = ("Authorization", "Bearer token-a2");
const TOKEN_B1: (&str, &str) = ("Authorization", "Bearer token-b1");

#[tokio::test]
async fn share_tenant_keeps_each_tenants_audio_to_itself() {
    let sim = Sim::start(FAST);
    let gw = Gateway::start(&format!("{}{}", auth_yaml(), cached(&sim, "{ share: tenant }")));
    let body = sft("Homework for Monday.");

    let a = send(&gw, &body, &[TOKEN_A1]).await;
    a.expect("MISS");
    let b = send(&gw, &body, &[TOKEN_B1]).await;
    b.expect("MISS");
    assert_ne!(a.key, b.key, "tenants have keys of their own");
    assert_eq!(requests(&sim).await, 2, "tenant B did not get A's audio");

    let again = send(&gw, &body, &[TOKEN_A1]).await;
    again.expect("HIT");
    assert_eq!(
        (again.key.clone(), again.body.clone()),
        (a.key.clone(), a.body.clone())
    );
    // Another token of the same tenant shares the tenant's entries.
    let same_tenant = send(&gw, &body, &[TOKEN_A2]).await;
    same_tenant.expect("HIT");
    assert_eq!(same_tenant.key, a.key);
    assert_eq!(requests(&sim).await, 2);

    // Anonymous callers form one tenant of their own.
    let anon = send(&gw, &body, &[]).await;
    anon.expect("MISS");
    assert!(anon.key != a.key && anon.key != b.key);
    send(&gw, &body, &[]).await.expect("HIT");
    assert_eq!(requests(&sim).await, 3);
}

#[tokio::test]
async fn share_global_gives_everyone_the_same_audio() {
    let sim = Sim::start(FAST);
    let gw = Gateway::start(&format!("{}{}", auth_yaml(), cached(&sim, "{ share: global }")));
    let body = sft("Homework for Tuesday.");

    let a = send(&gw, &body, &[TOKEN_A1]).await;
    a.expect("MISS");
    let b = send(&gw, &body, &[TOKEN_B1]).await;
    b.expect("HIT");
    assert_eq!((b.key.clone(), b.body.clone()), (a.key.clone(), a.body.clone()));
    let anon = send(&gw, &body, &[]).await;
    anon.expect("HIT");
    assert_eq!(anon.key, a.key);
    assert_eq!(requests(&sim).await, 1);
}

#[tokio::test]
async fn a_tenant_named_anonymous_does_not_see_anonymous_callers_audio() {
    let sim = Sim::start(FAST);
    let auth = format!(
        "  auth:\n    allow_anonymous: true\n    tokens:\n      - {{ name: n, sha256: \"{}\", tenant: anonymous }}\n",
        sha256_hex(b"token-n")
    );
    let gw = Gateway::start(&format!("{auth}{}", cached(&sim, "{ share: tenant }")));
    let body = sft("Only for the public.");
    let anon = send(&gw, &body, &[]).await;
    anon.expect("MISS");
    let named = send(&gw, &body, &[("Authorization", "Bearer token-n")]).await;
    named.expect("MISS");
    assert_ne!(named.key, anon.key);
    assert_eq!(requests(&sim).await, 2);
}
