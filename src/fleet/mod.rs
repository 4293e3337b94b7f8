//! Fleets: what each node tells the others, and the operator, through the
//! target alone. With `node_id` set, the fleet thread ([`publisher`]) keeps
//! every stream's small heartbeat object `STREAM/nodes/NODE_ID` current in
//! a documented text format ([`heartbeat`]), and one object per node in
//! the fleet [`index`] holding all of them, which `walship fleet` reads
//! (GETting only what changed since its last run); [`view`] reads the
//! per-stream heartbeats back, judging ages by the store's clock, for the
//! offloader [`election`] (pure) of `replicas = on` streams, whose outcome
//! each stream's worker reads from its [`member`], and for `fleet --deep`;
//! it also renders `fleet`'s output. `run --once` takes part through
//! [`once`].

pub mod election;
pub mod heartbeat;
pub mod index;
pub mod member;
pub mod once;
pub mod publisher;
pub mod view;
