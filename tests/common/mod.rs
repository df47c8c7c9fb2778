#![allow(dead_code)]
pub mod gateway;
pub mod redis;
pub mod sim;
