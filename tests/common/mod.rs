#![allow(dead_code)]
pub mod gateway;
pub mod sim;
