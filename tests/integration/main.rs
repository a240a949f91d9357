//! Integration tests: real servers on ephemeral loopback ports, real sockets. One test
//! binary (one link) for all of them.

mod access;
mod api;
mod api_input;
mod auth;
mod bad_input;
mod cluster;
mod cluster_admin;
mod conformance;
mod console;
mod failover;
mod helm;
mod image;
mod lagging;
mod layering;
mod membership;
mod migrations;
mod monitoring;
mod openapi;
mod operations;
mod operator;
mod outbox;
mod presence;
mod process;
mod protocol;
mod release;
mod resume;
mod slow_consumer;
mod startup;
mod supervision;
mod support;
mod tls;
mod tls_listener;
mod tour;
mod traces;
