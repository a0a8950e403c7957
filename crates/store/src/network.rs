//! Raft transport over tonic (client side `TonicNetwork`, server side `RaftServer`).
