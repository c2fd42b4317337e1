//! Routing: which events go where, in what shape.

pub mod topic_filter;
