//! Encoding of openraft and state-machine values (MessagePack via rmp-serde).
