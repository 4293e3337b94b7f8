//! Fleets: what each node tells the others, and the operator, through the
//! target alone. With `node_id` set, the fleet thread ([`publisher`]) keeps
//! every stream's small heartbeat object `STREAM/nodes/NODE_ID` current in
//! a documented text format ([`heartbeat`]); [`view`] reads them back,
//! judging ages by the store's clock, for `walship fleet` and for the
//! offloader [`election`] (pure) of `replicas = on` streams, whose outcome
//! each stream's worker reads from its [`member`].

pub mod election;
pub mod heartbeat;
pub mod member;
pub mod publisher;
pub mod view;
