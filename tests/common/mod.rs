#![allow(dead_code)]
pub mod gateway;
pub mod http;
pub mod metrics;
pub mod process;
pub mod python;
pub mod redis;
pub mod scripted_sim;
pub mod sim;
pub mod tls;
