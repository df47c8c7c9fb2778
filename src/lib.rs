//! cosygate: an edge gateway for self-hosted CosyVoice3 speech synthesis, built on Pingora.
#![forbid(unsafe_code)]

pub mod admin;
pub mod admission;
pub mod api;
pub mod backend;
pub mod cache;
pub mod config;
pub mod drain;
pub mod gateway;
pub mod jobs;
pub mod metrics;
pub mod periodic;
pub mod pid_file;
pub mod redis_link;
pub mod redis_lock;
pub mod schedule;
pub mod supervisor;
pub mod synth;
pub mod voices;
