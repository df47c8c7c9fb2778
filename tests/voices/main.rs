//! Registered voices end to end (issue 14), through the real binaries: register, list, use as
//! `voice_id` on `/generate` (the same cache key and bytes as sending the sample itself),
//! delete; kept across a restart (the voice directory), shared by two instances through Redis,
//! per tenant (another tenant can neither list, use nor delete a voice), with quotas, refusals
//! of bad samples with `/generate`'s codes, and off without a `voices` section.
//!
//! `api`: the routes on one instance; `tenants`: scopes and quotas; `shared`: restarts and Redis.

#[path = "../common/mod.rs"]
mod common;

mod api;
mod openai;
mod shared;
mod support;
mod tenants;
